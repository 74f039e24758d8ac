"""The tool loop: the model answers or calls a tool; a call is checked against the tool's schema and run, its
result (or the error, worded for the model) fed back as a `tool` message, and the model takes another turn. The loop
ends on a turn without a call (the final answer); after `max_calls` calls the model gets one more turn with calls
switched off (tool_choice "none"), so it always ends with an answer. Nothing a call does can crash the loop: an
unknown tool, arguments that do not match the schema, a tool's refusal or failure, a call cut by the token budget
all become an error message the model reads.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jsonschema

from llm_jax.data import chat
from llm_jax.data.sft import special_text
from llm_jax.infer.toolcall import TRIGGER, Turn, check_tools, decode_turn, format_call
from llm_jax.tools.builtin import Tool, ToolError

TurnFn = Callable[[list[dict], list[dict], str], Turn]  # (messages, tool specs, tool_choice) -> the next turn


@dataclasses.dataclass
class LoopResult:
    answer: str                 # the final turn's text
    messages: list[dict]        # the conversation with every call, result and the answer
    calls: list[dict]           # {"name", "arguments", "result", "ok"} in order
    stop: str                   # "answer" | "max_calls" (the answer came with calls switched off) | "length"


def execute(tools: dict[str, Tool], name: str, arguments) -> tuple[str, bool]:
    """(the result text, whether the call succeeded); every failure is a message for the model."""
    tool = tools.get(name)
    if tool is None:
        return f"error: there is no tool named {name!r}; the tools are {', '.join(sorted(tools))}", False
    if not isinstance(arguments, dict):
        return f"error: the arguments of {name} must be a JSON object", False
    try:
        jsonschema.validate(arguments, tool.parameters)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "arguments"
        return f"error: bad arguments for {name}: {where}: {e.message}", False
    try:
        return str(tool.run(**arguments)), True
    except ToolError as e:
        return f"error: {e}", False
    except Exception as e:  # a tool's own bug: the model hears of it, the loop goes on
        return f"error: {name} failed: {type(e).__name__}: {e}", False


def run_tools(turn_fn: TurnFn, messages: list[dict], tools: list[Tool], *, max_calls: int = 4) -> LoopResult:
    """Runs the loop from `messages` (ending with the user's message) with `tools` available."""
    if max_calls < 0:
        raise ValueError(f"max_calls must be >= 0, got {max_calls}")
    by_name = {t.name: t for t in tools}
    specs = [t.spec() for t in tools]
    messages, calls = list(messages), []
    while True:
        choice = "auto" if len(calls) < max_calls else "none"
        turn = turn_fn(messages, specs, choice)
        if turn.call is None and not turn.partial_call:
            messages.append({"role": "assistant", "content": turn.content})
            stop = "length" if turn.finish == "length" else ("answer" if choice == "auto" else "max_calls")
            return LoopResult(turn.content, messages, calls, stop)
        if turn.call is None:  # the budget cut the call's JSON
            messages.append({"role": "assistant", "content": turn.content + TRIGGER + turn.partial_call})
            name, arguments = None, None
            result, ok = "error: the tool call was cut off by the token limit; write a shorter call", False
        else:
            name, arguments = turn.call["name"], turn.call["arguments"]
            messages.append({"role": "assistant", "content": turn.content + format_call(name, arguments)})
            result, ok = execute(by_name, name, arguments)
        messages.append({"role": "tool", "content": result})
        calls.append({"name": name, "arguments": arguments, "result": result, "ok": ok})


class ModelTurns:
    """A `TurnFn` over a loaded model (`infer.load.load_workdir`): renders the conversation with the model's chat
    template and the tools, then `decode_turn` (tool calls constrained to the tools' schemas)."""

    def __init__(self, loaded, template: str | None, *, max_tokens: int = 96, temperature: float = 0.0,
                 seed: int = 0):
        self.loaded, self.template = loaded, template
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed
        tok = loaded.tokenizer
        self.bos, self.eos = special_text(tok, "bos"), special_text(tok, "eos")
        self.lead = chat.reply_lead(template, self.bos, self.eos)

    def prompt(self, messages: list[dict], specs: list[dict]) -> str:
        return chat.render(self.template, messages, self.bos, self.eos, tools=specs or None)

    def __call__(self, messages: list[dict], specs: list[dict], tool_choice: str) -> Turn:
        ids = self.loaded.tokenizer.encode(self.prompt(messages, specs))
        budget = min(self.max_tokens, self.loaded.cfg.model.seq_len - len(ids))
        if budget <= 0:
            return Turn("", None, "length", 0)  # the conversation has filled the context
        return decode_turn(self.loaded.model, self.loaded.params, self.loaded.cfg.model.seq_len,
                           self.loaded.tokenizer, ids, check_tools(specs) if specs else [],
                           tool_choice=tool_choice if specs else "none",
                           max_tokens=budget, temperature=self.temperature, seed=self.seed, lead=self.lead)


def transcript(result: LoopResult) -> str:
    """The conversation as lines for a console."""
    lines = [f"{m['role']}: {m['content']}" for m in result.messages]
    lines.append(f"({len(result.calls)} call(s), stopped: {result.stop})")
    return "\n".join(lines)


