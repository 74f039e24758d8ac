"""Tool calls in a model's reply: the protocol, the JSON schema of a call, and decoding one assistant turn that may
call a tool (the server's `tools` / `tool_calls`, the tool loop of `llm_jax/tools`).

Protocol (what `llm_jax/tools/arith.py`'s fine-tuning recipe teaches): an assistant turn is either free text, or
`<tool_call>` followed by one JSON object `{"name": NAME, "arguments": {...}}` that ends the turn. Tools are
OpenAI function specs (`{"type": "function", "function": {"name", "description", "parameters"}}`); the chat
template receives them as `tools` (the Hugging Face convention; the plain template lists them on a "tools:" line).

`decode_turn` generates freely until EOS, the budget, or the trigger text; on the trigger, the call is decoded
constrained to `call_schema(tools)` (`constrained.py`, on outlines-core) from a fresh prefill of the prompt, the
text so far and the trigger, so every completed call parses and its arguments match the tool's schema. tool_choice:
"auto" as just said; "required" (or one named function) starts with the trigger; "none" never calls (the trigger
ends the turn like a stop string). Sampling here is greedy or temperature only (no top-k / top-p).
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from llm_jax.infer.constrained import JsonConstraint, check_schema, constrained_generate, pick_token
from llm_jax.infer.stepper import Stepper

TRIGGER = "<tool_call>"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


class ToolSpecError(ValueError):
    """A malformed tool declaration or tool_choice (the server answers 400 with the message)."""


def check_tools(tools) -> list[dict]:
    """OpenAI tool specs -> [{"name", "description", "parameters"}], or ToolSpecError naming what is wrong."""
    if not isinstance(tools, list) or not tools:
        raise ToolSpecError("tools must be a non-empty list of {'type': 'function', 'function': {...}}")
    out, seen = [], set()
    for i, spec in enumerate(tools):
        fn = spec.get("function") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or spec.get("type") != "function" or not isinstance(fn, dict):
            raise ToolSpecError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name', 'parameters'}}}}")
        name = fn.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ToolSpecError(f"tools[{i}].function.name must be 1-64 letters, digits, _ or -; got {name!r}")
        if name in seen:
            raise ToolSpecError(f"tools[{i}].function.name {name!r} is declared twice")
        seen.add(name)
        parameters = fn.get("parameters", {"type": "object", "properties": {}})
        try:
            check_schema(parameters, f"tools[{i}].function.parameters")
        except ValueError as e:
            raise ToolSpecError(str(e)) from None
        if parameters.get("type") != "object":
            raise ToolSpecError(f"tools[{i}].function.parameters must be a schema of type 'object'")
        out.append({"name": name, "description": str(fn.get("description", "")), "parameters": parameters})
    return out


def openai_spec(tool: dict) -> dict:
    return {"type": "function", "function": {"name": tool["name"], "description": tool["description"],
                                             "parameters": tool["parameters"]}}


def choose(tools: list[dict], tool_choice) -> tuple[str, list[dict]]:
    """("auto" | "required" | "none", the tools a call may name) for OpenAI's tool_choice."""
    if tool_choice in (None, "auto", "required", "none"):
        return tool_choice or "auto", tools
    fn = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    if isinstance(fn, dict) and tool_choice.get("type") == "function":
        named = [t for t in tools if t["name"] == fn.get("name")]
        if named:
            return "required", named
        raise ToolSpecError(f"tool_choice names {fn.get('name')!r}, which is not among the tools")
    raise ToolSpecError("tool_choice must be 'auto', 'required', 'none' or {'type': 'function', 'function': "
                        "{'name': ...}}")


def call_schema(tools: list[dict]) -> dict:
    """The JSON schema of one call to any of `tools`: {"name": <a tool's name>, "arguments": <its parameters>}."""
    each = [{"type": "object", "properties": {"name": {"const": t["name"]}, "arguments": t["parameters"]},
             "required": ["name", "arguments"]} for t in tools]
    return each[0] if len(each) == 1 else {"anyOf": each}


def format_call(name: str, arguments: dict) -> str:
    """The text of a call as the model writes it (and as a past call is shown to it again)."""
    return TRIGGER + json.dumps({"name": name, "arguments": arguments})


@dataclasses.dataclass
class Turn:
    content: str            # the free text of the turn (before the trigger, if it called)
    call: dict | None       # {"name", "arguments"} of a completed call
    finish: str             # "stop" | "length" (the budget ran out) | "tool_calls"
    tokens: int             # new tokens generated
    partial_call: str = ""  # the call's JSON so far when the budget cut it


_CONSTRAINTS: dict[tuple[object, str], JsonConstraint] = {}  # keyed by the tokenizer object itself (not its id,
                                                              # which a later tokenizer could reuse)


def _constraint(tokenizer, schema: dict) -> JsonConstraint:
    key = (tokenizer, json.dumps(schema, sort_keys=True))
    if key not in _CONSTRAINTS:  # the automaton over the vocabulary is built once per tokenizer and schema
        _CONSTRAINTS[key] = JsonConstraint(schema, tokenizer)
    return _CONSTRAINTS[key]


def _unlead(text: str, lead: str) -> str:
    """The reply's text without the template's lead (the plain template's space after "assistant:"), which the
    template writes again when the turn is shown back."""
    return text[len(lead):] if lead and text.startswith(lead) else text


def decode_turn(model, params, context: int, tokenizer, prompt_ids: list[int], tools: list[dict], *,
                tool_choice="auto", max_tokens: int = 128, temperature: float = 0.0, seed: int = 0,
                lead: str = "") -> Turn:
    """One assistant turn after `prompt_ids` (the rendered conversation, ending where the reply begins). `lead`:
    what the chat template writes before a reply's text (`chat.reply_lead`), put before a forced trigger so that
    the call's tokens are those the model was trained on."""
    mode, callable_tools = choose(tools, tool_choice)
    rng = np.random.default_rng(seed)
    stepper = Stepper(model, params, context)
    eos = tokenizer.eos_id
    new: list[int] = []
    content, before = "", lead
    if mode != "required":
        logits_V = stepper.start(prompt_ids, max_tokens)
        everything = np.ones(tokenizer.vocab_size, bool)
        while len(new) < max_tokens:
            token = pick_token(logits_V, everything, rng, temperature)
            if token == eos:
                return Turn(_unlead(tokenizer.decode(new), lead), None, "stop", len(new))
            new.append(token)
            text = tokenizer.decode(new)
            if TRIGGER in text:
                before = text[:text.index(TRIGGER)]
                content = _unlead(before, lead) if before.strip() else ""
                if mode == "none":
                    return Turn(content, None, "stop", len(new))
                break
            if len(new) < max_tokens:
                logits_V = stepper.feed(token)
        else:
            return Turn(_unlead(tokenizer.decode(new), lead), None, "length", len(new))
    head = list(prompt_ids) + tokenizer.encode(before + TRIGGER)
    budget = min(max_tokens - len(new), context - len(head))  # "required" adds the trigger's tokens to the prompt
    if budget <= 0:
        return Turn(content, None, "length", len(new))
    first_V = stepper.start(head, budget)
    state = {"fed": 0, "logits": first_V}

    def logits_fn(ids: list[int]) -> np.ndarray:
        while state["fed"] < len(ids):  # tokens forced by the constraint were not fed yet
            state["logits"] = stepper.feed(ids[state["fed"]])
            state["fed"] += 1
        return state["logits"]

    ids, text = constrained_generate(logits_fn, _constraint(tokenizer, call_schema(callable_tools)), budget, rng,
                                     temperature)
    if ids and ids[-1] == eos:
        return Turn(content, json.loads(text), "tool_calls", len(new) + len(ids))
    return Turn(content, None, "length", len(new) + len(ids), partial_call=text)
