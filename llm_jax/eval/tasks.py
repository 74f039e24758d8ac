"""Benchmark task kinds, scored the way lm-evaluation-harness scores them:

- "choice" (multiple choice by log-likelihood): each choice is the continuation `" " + choice` after the
  context (the harness's target delimiter). `acc` = argmax of the summed log-probability, `acc_norm` = argmax of
  log-probability / len(choice) in characters; standard errors are the sample standard deviation over sqrt(n).
  Few-shot examples come from `--fewshot-data` or the same file (never the scored item), first_n or drawn with
  a fixed seed, joined as `context + " " + gold choice` with blank lines between them (fewshot.py).
  GLUE-style items also report F1 (of label 1) and Matthews correlation (`metrics.py`).
- "generate" (generation with answer extraction, GSM8K): few-shot prompt, greedy decoding until stop strings,
  strict and flexible answer extraction (`answers.py`), exact match ignoring ",", "$" and a trailing ".".

`run_task(model, kind, path, ...)` is the one entry point: the `eval` command, `train.eval_tasks` during training
and the lm-evaluation-harness comparison all go through it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from llm_jax.errors import UserError
from llm_jax.eval import answers, formats, metrics
from llm_jax.eval.fewshot import FEWSHOT_DELIMITER, TARGET_DELIMITER, fewshot_examples

KINDS = ("choice", "generate")


def stderr_of_mean(values: Sequence[float]) -> float:
    """Sample standard deviation / sqrt(n) (the harness's `mean_stderr`); 0 for fewer than two values."""
    x = np.asarray(values, np.float64)
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


def choice_requests(items: list[dict], num_fewshot: int, description: str = "", n_scored: int | None = None,
                    pool: list[dict] | None = None, sampler: str = "random") -> list[tuple[str, list[str]]]:
    """(prompt, [continuations]) of the first `n_scored` items: `description`, the few-shot examples (from `pool`,
    else from all items), then the item's context."""
    out = []
    for i, item in enumerate(items[:n_scored]):
        shots = [x["context"] + TARGET_DELIMITER + x["choices"][x["label"]]
                 for x in fewshot_examples(items, i, num_fewshot, pool, sampler)]
        prompt = description + FEWSHOT_DELIMITER.join(shots + [item["context"]])
        out.append((prompt, [TARGET_DELIMITER + c for c in item["choices"]]))
    return out


def score_choice(model, items: list[dict], num_fewshot: int = 0, description: str = "",
                 n_scored: int | None = None, pool: list[dict] | None = None, sampler: str = "random") -> dict:
    """acc, acc_norm, their standard errors, n (and f1 / mcc for two-choice items) over the first `n_scored` items,
    plus per-item log-likelihoods."""
    requests = choice_requests(items, num_fewshot, description, n_scored, pool, sampler)
    scored = items[:len(requests)]
    flat = [(prompt, cont) for prompt, conts in requests for cont in conts]
    lls = [ll for ll, _ in model.loglikelihood(flat)]
    correct, correct_norm, predictions, per_item, at = [], [], [], [], 0
    for item in scored:
        k = len(item["choices"])
        ll = np.asarray(lls[at:at + k])
        at += k
        lengths = np.asarray([float(len(c)) for c in item["choices"]])
        pred, pred_norm = int(np.argmax(ll)), int(np.argmax(ll / lengths))
        correct.append(float(pred == item["label"]))
        correct_norm.append(float(pred_norm == item["label"]))
        predictions.append(pred)
        per_item.append(ll.tolist())
    out = {"acc": float(np.mean(correct)), "acc_stderr": stderr_of_mean(correct),
           "acc_norm": float(np.mean(correct_norm)), "acc_norm_stderr": stderr_of_mean(correct_norm),
           "n": len(scored)}
    labels = [item["label"] for item in scored]
    if all(len(item["choices"]) == 2 for item in scored):
        out["f1"] = metrics.f1(labels, predictions)
        out["mcc"] = metrics.matthews(labels, predictions)
    return out | {"loglikelihoods": per_item}


def score_generate(model, items: list[dict], *, num_fewshot: int = 0, style: str = "plain",
                   max_new_tokens: int = 256, n_scored: int | None = None, pool: list[dict] | None = None,
                   sampler: str = "random") -> dict:
    """exact_match under strict and flexible extraction (GSM8K's two filters) over the first `n_scored` items, n,
    and each item's completion."""
    prompts, until = answers.prompts(items, num_fewshot, style, n_scored, pool, sampler)
    completions = model.generate_until(prompts, until=until, max_new_tokens=max_new_tokens, progress="generate")
    strict, flexible, rows = [], [], []
    for item, completion in zip(items, completions):
        gold = answers.gold(item["answer"])
        s = answers.exact_match(answers.extract_strict(completion, style), gold)
        f = answers.exact_match(answers.extract_flexible(completion), gold)
        strict.append(float(s))
        flexible.append(float(f))
        rows.append({"completion": completion, "gold": gold, "strict": s, "flexible": f})
    return {"exact_match_strict": float(np.mean(strict)), "exact_match_strict_stderr": stderr_of_mean(strict),
            "exact_match_flexible": float(np.mean(flexible)),
            "exact_match_flexible_stderr": stderr_of_mean(flexible), "n": len(rows), "completions": rows}


def run_task(model, kind: str, path: str, *, fmt: str = "auto", num_fewshot: int = 0, limit: int | None = None,
             style: str = "plain", max_new_tokens: int = 256, fewshot_path: str | None = None,
             fewshot_sampler: str = "random") -> dict:
    """Reads `path` in format `fmt` (see formats.py) and scores its first `limit` items with `kind`; few-shot
    examples come from `fewshot_path` (same format) or from the whole file."""
    if kind not in KINDS:
        raise UserError(f"task kind {kind!r}: must be one of {', '.join(KINDS)}")
    items, description = formats.read(path, kind, fmt)
    pool = formats.read(fewshot_path, kind, fmt)[0] if fewshot_path else None
    if kind == "choice":
        return score_choice(model, items, num_fewshot, description, limit, pool, fewshot_sampler)
    return score_generate(model, items, num_fewshot=num_fewshot, style=style, max_new_tokens=max_new_tokens,
                          n_scored=limit, pool=pool, sampler=fewshot_sampler)
