"""Instruction tasks (llm_jax/data/instruct.py) and their scorer (llm_jax/eval/instruct.py): answers are right, the
held-out prompts are never trained on, replies are matched exactly, per kind."""

import json
import re

import pytest

from llm_jax.data import instruct as tasks
from llm_jax.data.tokenizers import CharTokenizer
from llm_jax.data.tokenizers.wordpiece import SPECIAL
from llm_jax.errors import UserError
from llm_jax.eval import instruct


def test_answers_are_right_and_test_prompts_are_held_out(tmp_path):
    info = tasks.write_sft_tasks(str(tmp_path), n_train=300, n_test=40, seed=3)
    train = [json.loads(line) for line in open(info["paths"]["train"])]
    test = [json.loads(line) for line in open(info["paths"]["test"])]
    assert len(train) == 900 and len(test) == 120 and {r["kind"] for r in test} == set(tasks.KINDS)
    prompt = lambda r: r["messages"][0]["content"]  # noqa: E731
    assert not {prompt(r) for r in train} & {prompt(r) for r in test}
    assert len({prompt(r) for r in train}) == len(train)
    for r in train + test:
        user, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        if r["kind"] == "add":
            a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", user).groups())
            assert answer == str(a + b)
        elif r["kind"] == "reverse":
            assert answer.split() == user.removeprefix("Reverse the words: ").split()[::-1]
        else:
            assert answer == str(len(user.removeprefix("How many words: ").split()))
    assert tasks.make_splits(10, 5, seed=3) == tasks.make_splits(10, 5, seed=3)  # deterministic
    prefs = [json.loads(line) for line in open(info["paths"]["prefs_test"])]
    assert len(prefs) == len(test)
    for pair, record in zip(prefs, test):  # the rule: the right answer over a wrong one, for the same prompt
        assert pair["chosen"] == record["messages"] and pair["rejected"][0] == record["messages"][0]
        assert pair["rejected"][1]["content"] != record["messages"][1]["content"]


class Canned:
    """A stand-in model that replies from a table (the scorer is under test, not a model)."""

    tokenizer = CharTokenizer(list(SPECIAL.values()) + list("abcdefghijklmnopqrstuvwxyz0123456789 :?\n"))

    def __init__(self, replies):
        self.replies, self.prompts = replies, None

    def generate_until(self, prompts, max_new_tokens, progress=None):
        self.prompts = prompts
        return [self.replies[p] for p in prompts]


def test_exact_match_per_kind_with_the_chat_template(tmp_path):
    path = tmp_path / "test.jsonl"
    records = [{"messages": [{"role": "user", "content": "what is 1 + 2?"}, {"role": "assistant", "content": "3"}],
                "kind": "add"},
               {"messages": [{"role": "user", "content": "what is 2 + 2?"}, {"role": "assistant", "content": "4"}],
                "kind": "add"},
               {"prompt": "count: a b", "completion": " 2", "kind": "count"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    items = instruct.read_items(str(path))
    model = Canned({"user: what is 1 + 2?\nassistant:": " 3\n", "user: what is 2 + 2?\nassistant:": " 5",
                    "count: a b": "2"})
    result = instruct.score_instructions(model, items, None)
    assert result["exact_match"] == pytest.approx(2 / 3) and result["n"] == 3
    assert result["by_kind"]["add"]["exact_match"] == 0.5 and result["by_kind"]["count"]["exact_match"] == 1.0
    assert result["exact_match_stderr"] == pytest.approx((2 / 3 * 1 / 3 / 2) ** 0.5)
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(UserError, match="record 1"):
        instruct.read_items(str(path))


def test_make_sft_and_eval_instruct_commands(trained, tmp_path):
    from helpers import run_cli
    _, workdir = trained
    made = run_cli("data", "make-sft", "--output", tmp_path / "tasks", "--n", 5, "--json")
    assert made.returncode == 0, made.stderr[-2000:]
    info = json.loads(made.stdout.strip().splitlines()[-1])
    assert info["train"] == 15 and info["test"] == 300 and set(info["paths"]) == {"train", "test", "prefs_train",
                                                                                  "prefs_test"}
    scored = run_cli("eval", "instruct", "--workdir", workdir, "--data", info["paths"]["test"], "--limit", 6,
                     "--max-new-tokens", 4, "--samples-out", tmp_path / "replies.jsonl", "--json")
    assert scored.returncode == 0, scored.stderr[-2000:]
    out = json.loads(scored.stdout.strip().splitlines()[-1])
    assert out["n"] == 6 and set(out["by_kind"]) == {"add"} and 0 <= out["exact_match"] <= 1
    replies = [json.loads(line) for line in open(tmp_path / "replies.jsonl")]
    assert len(replies) == 6 and all(r["correct"] == (r["reply"].strip() == r["answer"]) for r in replies)
    bad = run_cli("eval", "instruct", "--workdir", workdir, "--data", info["paths"]["test"], "--max-new-tokens", 16)
    assert bad.returncode == 2 and "leaves no room" in bad.stderr
