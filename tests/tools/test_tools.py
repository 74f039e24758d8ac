"""Tool use: the calculator against Python's arithmetic, the loop's stopping rules and error handling with a scripted
model, the host-driven KV-cache stepper against a full forward pass, tool calls decoded by a real (random) model
always parsing and matching the tool's schema, the chat template and fine-tuning records with tools, and the
calculator recipe's data."""

import json
import random

import jax
import jax.numpy as jnp
import jsonschema
import numpy as np
import pytest

from helpers import small_config
from llm_jax.data import chat, sft
from llm_jax.data.tokenizers import load_tokenizer
from llm_jax.infer import toolcall
from llm_jax.infer.load import LoadedModel
from llm_jax.infer.stepper import Stepper
from llm_jax.models import build_model
from llm_jax.tools import arith
from llm_jax.tools.builtin import CALCULATOR, Tool, ToolError, calculate
from llm_jax.tools.loop import ModelTurns, execute, run_tools

pytest.importorskip("outlines_core", reason="tool calls are constrained by outlines-core: pip install -e '.[tools]'")

CONTEXT = 128


def test_calculator_agrees_with_python_and_refuses_what_is_not_arithmetic():
    rng = random.Random(0)
    for _ in range(200):
        a, b = rng.randint(-999, 999), rng.randint(1, 99)
        op = rng.choice(["+", "-", "*", "//", "%"])
        assert calculate(f"{a} {op} ({b})") == str({"+": a + b, "-": a - b, "*": a * b, "//": a // b,
                                                     "%": a % b}[op])
    assert calculate("7 / 2") == "3.5" and calculate("6 / 3") == "2" and calculate("2 ** 10") == "1024"
    assert calculate("-(3 + 4) * 2") == "-14" and calculate("1 / 3") == "0.3333333333"
    for bad, said in [("1 / 0", "division by zero"), ("__import__('os')", "only numbers"), ("x + 1", "only numbers"),
                      ("9 ** 999", "power is too large"), ("1 +", "not an arithmetic"), ("1" * 300, "longer than"),
                      ("10 ** 20", "out of range"), ("'a' * 3", "only numbers"), ("(-1) ** 0.5", "out of range")]:
        with pytest.raises(ToolError, match=said):
            calculate(bad)


def test_execute_turns_every_failure_into_a_message():
    def broken(expression):
        raise RuntimeError("disk on fire")
    tools = {"calculator": CALCULATOR, "broken": Tool("broken", "", CALCULATOR.parameters, broken)}
    assert execute(tools, "calculator", {"expression": "2 + 3"}) == ("5", True)
    for name, args, said in [("search", {}, "no tool named 'search'"),
                             ("calculator", [1], "must be a JSON object"),
                             ("calculator", {}, "'expression' is a required property"),
                             ("calculator", {"expression": 5}, "expression: 5 is not of type 'string'"),
                             ("calculator", {"expression": "1/0"}, "division by zero"),
                             ("broken", {"expression": "1"}, "broken failed: RuntimeError: disk on fire")]:
        text, ok = execute(tools, name, args)
        assert not ok and text.startswith("error: ") and said in text, text


def _scripted(turns):
    """A TurnFn replaying `turns` and recording the tool_choice of each call."""
    seen = []

    def fn(messages, specs, choice):
        seen.append((choice, [s["function"]["name"] for s in specs], len(messages)))
        return turns[len(seen) - 1]
    return fn, seen


def _call(expression, name="calculator"):
    return toolcall.Turn("", {"name": name, "arguments": {"expression": expression}}, "tool_calls", 9)


def test_loop_feeds_results_back_and_stops_on_the_answer():
    fn, seen = _scripted([_call("17 * 23"), toolcall.Turn("391", None, "stop", 2)])
    user = [{"role": "user", "content": "What is 17 times 23?"}]
    out = run_tools(fn, user, [CALCULATOR], max_calls=4)
    assert out.answer == "391" and out.stop == "answer" and len(out.calls) == 1
    assert out.calls[0] == {"name": "calculator", "arguments": {"expression": "17 * 23"}, "result": "391", "ok": True}
    assert [m["role"] for m in out.messages] == ["user", "assistant", "tool", "assistant"]
    assert out.messages[1]["content"] == '<tool_call>{"name": "calculator", "arguments": {"expression": "17 * 23"}}'
    assert out.messages[2]["content"] == "391"
    assert seen == [("auto", ["calculator"], 1), ("auto", ["calculator"], 3)]
    assert user == [{"role": "user", "content": "What is 17 times 23?"}]  # the caller's list is not changed


def test_loop_stops_after_max_calls_with_one_turn_without_tools():
    fn, seen = _scripted([_call("1 + 1")] * 3 + [toolcall.Turn("2", None, "stop", 1)])
    out = run_tools(fn, [{"role": "user", "content": "1+1?"}], [CALCULATOR], max_calls=3)
    assert len(out.calls) == 3 and out.stop == "max_calls" and out.answer == "2"
    assert [c for c, _, _ in seen] == ["auto", "auto", "auto", "none"]
    fn, seen = _scripted([toolcall.Turn("no idea", None, "stop", 2)])
    assert run_tools(fn, [{"role": "user", "content": "?"}], [CALCULATOR], max_calls=0).stop == "max_calls"
    assert seen[0][0] == "none"


def test_bad_calls_become_messages_to_the_model_not_crashes():
    cut = toolcall.Turn("", None, "length", 30, partial_call='{"name": "calculator", "argu')
    fn, _ = _scripted([_call("1 / 0"), _call("1 + 1", name="weather"), cut, toolcall.Turn("I cannot", None, "stop", 3)])
    out = run_tools(fn, [{"role": "user", "content": "1/0?"}], [CALCULATOR], max_calls=5)
    assert out.stop == "answer" and [c["ok"] for c in out.calls] == [False, False, False]
    tool_messages = [m["content"] for m in out.messages if m["role"] == "tool"]
    assert tool_messages[0] == "error: division by zero"
    assert "no tool named 'weather'" in tool_messages[1] and "cut off by the token limit" in tool_messages[2]
    assert out.messages[5]["content"] == '<tool_call>{"name": "calculator", "argu'


def test_tool_specs_and_tool_choice_are_checked():
    spec = CALCULATOR.spec()
    assert toolcall.check_tools([spec])[0]["name"] == "calculator"
    for bad, said in [([], "non-empty list"), ([{"type": "function"}], "must be"),
                      ([{"type": "function", "function": {"name": "a b"}}], "letters, digits"),
                      ([spec, spec], "declared twice"),
                      ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                                       "pattern": "x"}}}],
                       "'pattern' is not supported"),
                      ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
                       "of type 'object'")]:
        with pytest.raises(toolcall.ToolSpecError, match=said):
            toolcall.check_tools(bad)
    assert chat.reply_lead(None) == " " and toolcall._unlead(" 391", " ") == "391" and toolcall._unlead("x", " ") == "x"
    tools = toolcall.check_tools([spec])
    assert toolcall.choose(tools, {"type": "function", "function": {"name": "calculator"}}) == ("required", tools)
    for bad in ["sometimes", {"type": "function", "function": {"name": "other"}}]:
        with pytest.raises(toolcall.ToolSpecError):
            toolcall.choose(tools, bad)


@pytest.fixture(scope="module")
def random_model(trained):
    """A 128-token model with the trained run's tokenizer and large random weights (varied tokens)."""
    _, workdir = trained
    tokenizer = load_tokenizer(workdir)
    cfg = small_config(seq_len=CONTEXT, positions="rope", vocab_size=tokenizer.vocab_size)
    model = build_model(cfg.model)
    params = model.init(jax.random.key(0), jnp.zeros((1, CONTEXT), jnp.int32))["params"]
    params = jax.tree.map(lambda x: x * 20 if x.ndim > 1 else x, params)
    return LoadedModel(cfg, model, params, tokenizer, 0)


def test_stepper_logits_equal_a_full_forward_pass(random_model):
    m = random_model
    ids = m.tokenizer.encode("ROMEO: what light through yonder window breaks")
    stepper = Stepper(m.model, m.params, CONTEXT)
    got = [stepper.start(ids[:5], 40)] + [stepper.feed(t) for t in ids[5:]]
    full_LV = np.asarray(m.model.apply({"params": m.params}, jnp.asarray([ids]))[0])
    np.testing.assert_allclose(np.stack(got), full_LV[4:], rtol=2e-4, atol=2e-4)


def test_decoded_calls_always_parse_and_match_the_schema(random_model):
    m = random_model
    short = {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 6},
                                              "exact": {"type": "boolean"}}, "required": ["expression"]}
    other = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    specs = [{"type": "function", "function": {"name": "calc", "parameters": short}},
             {"type": "function", "function": {"name": "count", "parameters": other}}]
    tools = toolcall.check_tools(specs)
    prompt = m.tokenizer.encode(chat.render(None, [{"role": "user", "content": "Add these."}], tools=specs))
    completed = {}
    for choice in ["required", {"type": "function", "function": {"name": "calc"}},
                   {"type": "function", "function": {"name": "count"}}]:
        for seed in range(6):
            turn = toolcall.decode_turn(m.model, m.params, CONTEXT, m.tokenizer, prompt[-40:], tools,
                                        tool_choice=choice, max_tokens=86, temperature=1.0, seed=seed)
            if turn.finish == "length":  # the budget may cut a call; what was written is still a valid prefix
                assert turn.call is None and turn.partial_call.startswith("{")
                continue
            assert turn.finish == "tool_calls" and turn.content == ""
            jsonschema.validate(turn.call, toolcall.call_schema(tools))
            if isinstance(choice, dict):
                assert turn.call["name"] == choice["function"]["name"]
            completed[turn.call["name"]] = completed.get(turn.call["name"], 0) + 1
    assert set(completed) == {"calc", "count"} and sum(completed.values()) >= 9, completed


def test_model_turns_and_the_loop_on_a_real_model(random_model):
    """The whole path on a model: render with tools, decode (free, then a constrained call when the text reaches
    the trigger), run, feed back; a random model answers nonsense, but the loop's contract holds."""
    turns = ModelTurns(random_model, None, max_tokens=24, temperature=1.0)
    out = run_tools(turns, [{"role": "user", "content": "2+2?"}], [CALCULATOR], max_calls=1)
    assert out.stop in ("answer", "max_calls", "length") and len(out.calls) <= 1
    assert out.messages[-1]["role"] == "assistant" and out.messages[-1]["content"] == out.answer
    forced = ModelTurns(random_model, None, max_tokens=40, temperature=1.0)
    prompt = forced.prompt([{"role": "user", "content": "2+2?"}], [CALCULATOR.spec()])
    assert prompt == "tools: calculator(expression: string)\nuser: 2+2?\nassistant:"


def test_fine_tuning_records_render_the_tools_and_train_the_call(trained):
    _, workdir = trained
    tok = load_tokenizer(workdir)
    item = arith.problem("mul", random.Random(1))
    with_tool, direct = arith.records(item)
    segments = sft.example_segments(with_tool, "messages", None, tok)
    trained_text = [t for t, a in segments if a]
    call = '{"name": "calculator", "arguments": {"expression": "%s"}}' % item["expression"]
    assert segments[0][0].startswith("tools: calculator(expression: string)\nuser: There are")
    assert trained_text[0] == f" <tool_call>{call}\n"
    assert trained_text[1].strip() == item["answer"] and len(trained_text) == 2  # the tool's result is not trained
    assert not sft.example_segments(direct, "messages", None, tok)[0][0].startswith("tools:")
    assert sum(len(tok.encode(text)) for text, _ in segments) < 256  # fits the tiny model (even this 384-token vocab)


def test_word_problems_are_right_and_held_out(tmp_path):
    for item in arith.problems(400, seed=5):
        a, op, b = item["expression"].split()
        a, b = int(a), int(b)
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        assert op != "/" or a % b == 0
        assert item["answer"] == str(value) and str(a) in item["question"] and str(b) in item["question"]
    info = arith.write_data(str(tmp_path / "d"), n_train=300, n_test=50)
    assert info == {"train_records": 600, "train_problems": 300, "test_problems": 50}
    train = [json.loads(x) for x in open(tmp_path / "d" / "train.jsonl")]
    test = arith.read_test(str(tmp_path / "d" / "test.jsonl"))
    assert not {t["question"] for t in test} & {r["messages"][0]["content"] for r in train}
    assert sum("tools" in r for r in train) == 300
    assert arith.correct("The answer is 391.", "391") and not arith.correct("39 1", "391")
    with pytest.raises(Exception, match="exists"):
        arith.write_data(str(tmp_path / "d"))


def test_score_counts_answers_with_and_without_the_tool_and_right_calls():
    """A scripted model that calls the calculator with the problem's expression, then repeats the tool's result;
    without tools it answers 0: accuracy 1 with the tool, 0 without, every call right."""
    items = arith.problems(8, seed=3)

    def turn_fn(messages, specs, choice):
        question = messages[0]["content"]
        item = next(i for i in items if i["question"] == question)
        if messages[-1]["role"] == "tool":
            return toolcall.Turn(f"It is {messages[-1]['content']}.", None, "stop", 3)
        if specs and choice == "auto":
            return toolcall.Turn("", {"name": "calculator", "arguments": {"expression": item["expression"]}},
                                 "tool_calls", 9)
        return toolcall.Turn("0", None, "stop", 1)

    out = arith.score(turn_fn, items, log=lambda _: None)
    assert out["accuracy_with_tool"] == 1.0 and out["accuracy_without_tool"] == 0.0
    assert out["calls_per_problem"] == 1.0 and out["calls_succeeded"] == 1.0 and out["right_call_result"] == 1.0
    assert set(out["by_kind"]) == set(arith.KINDS) and out["problems"] == 8
