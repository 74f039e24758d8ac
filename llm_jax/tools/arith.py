"""The calculator recipe: arithmetic word problems (synthetic, seeded, answers checkable), fine-tuning records that
teach a small model to call the calculator when it is offered and to answer directly when it is not, and the
accuracy of a model with and without the tool.

One problem, two records: with the tool, `{"tools": [calculator], "messages": [user, assistant: <tool_call>{...},
tool: result, assistant: result]}`; without it, `{"messages": [user, assistant: answer]}`. The same fine-tuned
model is then asked the held-out problems twice (`score`): with the calculator offered (the tool loop runs the
real calculator) and without (its own arithmetic).
"""

from __future__ import annotations

import json
import os
import random
import re

from llm_jax.fileio import atomic_write, check_new_output
from llm_jax.infer.toolcall import format_call
from llm_jax.tools.builtin import CALCULATOR, calculate
from llm_jax.tools.loop import TurnFn, run_tools

NAMES = ("Anna", "Ben", "Clara", "David", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jack", "Lena", "Omar")
THINGS = ("apples", "books", "coins", "stamps", "marbles", "cards", "shells", "pencils", "eggs", "stones")
KINDS = ("add", "sub", "mul", "div")


def problem(kind: str, rng: random.Random) -> dict:
    """{"question", "expression", "answer"} of one problem of `kind`."""
    name, things = rng.choice(NAMES), rng.choice(THINGS)
    if kind == "add":
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        q, expr = f"{name} has {a} {things} and gets {b} more. How many {things} does {name} have now?", f"{a} + {b}"
    elif kind == "sub":
        a = rng.randint(300, 999)
        b = rng.randint(100, a - 1)
        q, expr = f"{name} had {a} {things} and gave away {b}. How many {things} are left?", f"{a} - {b}"
    elif kind == "mul":
        a, b = rng.randint(12, 99), rng.randint(12, 99)
        q, expr = f"There are {a} boxes with {b} {things} in each. How many {things} are there in all?", f"{a} * {b}"
    elif kind == "div":
        b, share = rng.randint(3, 19), rng.randint(12, 99)
        q, expr = (f"{name} shares {b * share} {things} equally among {b} friends. How many {things} does each "
                   f"friend get?", f"{b * share} / {b}")
    else:
        raise ValueError(f"kind {kind!r}: one of {KINDS}")
    return {"kind": kind, "question": q, "expression": expr, "answer": calculate(expr)}


def problems(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [problem(KINDS[i % len(KINDS)], rng) for i in range(n)]


def records(item: dict) -> list[dict]:
    """The two fine-tuning records of a problem (with the calculator offered; without)."""
    call = format_call(CALCULATOR.name, {"expression": item["expression"]})
    with_tool = {"tools": [CALCULATOR.spec()],
                 "messages": [{"role": "user", "content": item["question"]}, {"role": "assistant", "content": call},
                              {"role": "tool", "content": item["answer"]},
                              {"role": "assistant", "content": item["answer"]}]}
    direct = {"messages": [{"role": "user", "content": item["question"]},
                           {"role": "assistant", "content": item["answer"]}]}
    return [with_tool, direct]


def write_data(out: str, n_train: int = 4000, n_test: int = 200, seed: int = 0) -> dict:
    """train.jsonl (both records of each training problem, shuffled) and test.jsonl (held-out problems: no
    question of the test set is a training question)."""
    check_new_output(out, flag="--output")
    train = problems(n_train, seed)
    seen = {p["question"] for p in train}
    test = [p for p in problems(n_test * 2, seed + 1) if p["question"] not in seen][:n_test]
    rows = [r for p in train for r in records(p)]
    random.Random(seed).shuffle(rows)
    os.makedirs(out)
    atomic_write(os.path.join(out, "train.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write(os.path.join(out, "test.jsonl"), "".join(json.dumps(p) + "\n" for p in test))
    return {"train_records": len(rows), "train_problems": len(train), "test_problems": len(test)}


def read_test(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def correct(answer: str, expected: str) -> bool:
    """The first number of the answer is the expected one."""
    m = NUMBER.search(answer)
    return m is not None and m.group(0) == expected


def score(turn_fn: TurnFn, items: list[dict], *, max_calls: int = 2, log=print) -> dict:
    """Accuracy per kind with the calculator offered and without, and how the tool was used."""
    out = {"with_tool": {}, "without_tool": {}}
    totals = {"with_tool": 0, "without_tool": 0}
    calls = ok_calls = right_results = 0
    for i, item in enumerate(items):
        user = [{"role": "user", "content": item["question"]}]
        helped = run_tools(turn_fn, user, [CALCULATOR], max_calls=max_calls)
        alone = run_tools(turn_fn, user, [], max_calls=0)
        calls += len(helped.calls)
        ok_calls += sum(c["ok"] for c in helped.calls)
        right_results += any(c["ok"] and c["result"] == item["answer"] for c in helped.calls)
        for key, result in (("with_tool", helped), ("without_tool", alone)):
            hit = correct(result.answer, item["answer"])
            out[key].setdefault(item["kind"], []).append(hit)
            totals[key] += hit
        if (i + 1) % 50 == 0:
            log(f"tools: {i + 1}/{len(items)} problems")
    n = len(items)
    return {"problems": n, "accuracy_with_tool": totals["with_tool"] / n,
            "accuracy_without_tool": totals["without_tool"] / n,
            "by_kind": {k: {"with_tool": sum(v) / len(v), "without_tool": sum(out["without_tool"][k]) /
                            len(out["without_tool"][k])} for k, v in sorted(out["with_tool"].items())},
            "calls_per_problem": calls / n, "calls_succeeded": ok_calls / max(calls, 1),
            "right_call_result": right_results / n}  # a call returned the answer: the rest is copying it
