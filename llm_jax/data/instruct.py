"""Synthetic instruction tasks whose answers can be checked (no instruction dataset can be downloaded here).

`llm-jax data make-sft --output DIR` writes `train.jsonl` and `test.jsonl`: chat records
`{"messages": [user, assistant], "kind": ...}` of these kinds, the test prompts disjoint from the training ones —
and `prefs_train.jsonl` / `prefs_test.jsonl`: the same prompts as preference pairs labelled by a rule (the right
answer is chosen over a wrong one: a sum or count off by 1-3, the words unreversed or shuffled):

| kind      | user                                   | assistant        |
|-----------|----------------------------------------|------------------|
| `add`     | `What is 37 + 45?`                     | `82`             |
| `reverse` | `Reverse the words: to be or not`      | `not or be to`   |
| `count`   | `How many words: my lord the king`     | `4`              |

Words come from the embedded Shakespeare corpus (its most frequent lowercase words), so a model pretrained on it
knows their tokens. Scored by `llm-jax eval instruct` (exact match of the reply, per kind).
"""

from __future__ import annotations

import collections
import json
import os
import re

import numpy as np

from llm_jax.data.corpus import shakespeare_scenes
from llm_jax.fileio import atomic_write

KINDS = ("add", "reverse", "count")
N_WORDS = 300


def common_words(n: int = N_WORDS) -> list[str]:
    """The corpus's n most frequent lowercase words of two letters or more (ties by spelling)."""
    counts = collections.Counter(w for scene in shakespeare_scenes() for w in re.findall(r"\b[a-z]{2,}\b", scene))
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def example(kind: str, rng: np.random.Generator, words: list[str]) -> tuple[str, str]:
    """(user message, the one right reply) of a random task of `kind`."""
    if kind == "add":
        a, b = (int(x) for x in rng.integers(0, 100, 2))
        return f"What is {a} + {b}?", str(a + b)
    picked = [words[i] for i in rng.integers(0, len(words), int(rng.integers(3, 6) if kind == "reverse"
                                                                      else rng.integers(2, 9)))]
    if kind == "reverse":
        return f"Reverse the words: {' '.join(picked)}", " ".join(reversed(picked))
    if kind == "count":
        return f"How many words: {' '.join(picked)}", str(len(picked))
    raise ValueError(f"unknown task kind {kind!r}; choose from {', '.join(KINDS)}")


def make_splits(n_train: int, n_test: int, seed: int = 0, kinds=KINDS) -> tuple[list[dict], list[dict]]:
    """(train records, test records): per kind n_test held-out prompts, then n_train other training prompts."""
    rng, words = np.random.default_rng(seed), common_words()
    train, test = [], []
    for kind in kinds:
        seen, out = set(), {"test": [], "train": []}
        for split, n in (("test", n_test), ("train", n_train)):
            tries = 0
            while len(out[split]) < n:
                user, answer = example(kind, rng, words)
                tries += 1
                if tries > 50 * n + 1000:
                    raise ValueError(f"cannot draw {n} distinct {kind} prompts")
                if user in seen:  # every prompt once: none of the test prompts is trained on
                    continue
                seen.add(user)
                out[split].append((user, answer))
        for split, target in (("train", train), ("test", test)):
            target += [{"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}],
                        "kind": kind} for u, a in out[split]]
    order = np.random.default_rng(seed + 1).permutation(len(train))
    return [train[i] for i in order], test


def wrong_answer(kind: str, user: str, answer: str, rng: np.random.Generator) -> str:
    """A plausible wrong reply: a sum or count off by 1-3, or the words in their original or a shuffled order."""
    if kind in ("add", "count"):
        off = int(rng.integers(1, 4)) * (1 if rng.random() < 0.5 or int(answer) < 4 else -1)
        return str(int(answer) + off)
    words = user.removeprefix("Reverse the words: ").split()
    for _ in range(10):
        shuffled = " ".join(words[i] for i in rng.permutation(len(words)))
        if shuffled != answer:
            return shuffled
    return " ".join(words)


def preference_pairs(records: list[dict], seed: int = 0) -> list[dict]:
    """One pair per record, labelled by the rule "the right answer is preferred": chosen = the record's reply,
    rejected = `wrong_answer`; UltraFeedback's layout (message lists)."""
    rng, out = np.random.default_rng(seed), []
    for r in records:
        user, answer = r["messages"][0], r["messages"][1]["content"]
        wrong = wrong_answer(r["kind"], user["content"], answer, rng)
        out.append({"chosen": [user, {"role": "assistant", "content": answer}],
                    "rejected": [user, {"role": "assistant", "content": wrong}], "kind": r["kind"]})
    return out


def write_sft_tasks(out: str, n_train: int = 3000, n_test: int = 100, seed: int = 0) -> dict:
    """Writes out/train.jsonl and out/test.jsonl (chat records), and out/prefs_train.jsonl and prefs_test.jsonl
    (their preference pairs: the right answer over a wrong one); returns their paths and sizes."""
    train, test = make_splits(n_train, n_test, seed)
    os.makedirs(out, exist_ok=True)
    paths = {}
    for name, records in (("train", train), ("test", test), ("prefs_train", preference_pairs(train, seed)),
                          ("prefs_test", preference_pairs(test, seed + 1))):
        paths[name] = os.path.join(out, f"{name}.jsonl")
        atomic_write(paths[name], "".join(json.dumps(r) + "\n" for r in records))
    return {"paths": paths, "train": len(train), "test": len(test), "kinds": list(KINDS)}
