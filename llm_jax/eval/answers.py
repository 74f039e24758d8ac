"""GSM8K-style generation tasks: the prompts (plain few-shot, few-shot chain of thought, zero-shot chain of
thought), the answer extraction and the exact-match rule, each as lm-evaluation-harness's gsm8k tasks have them:

| style          | prompt of an item                        | few-shot examples               | strict extraction  |
|----------------|------------------------------------------|---------------------------------|--------------------|
| `plain`        | `Question: {q}\\nAnswer:`                 | other items, ` {full answer}`   | `#### N`           |
| `cot`          | `Q: {q}\\nA:`                             | the harness's 8 worked exemplars| `The answer is N.` |
| `zeroshot-cot` | `Q: {q}\\nA: Let's think step by step.`   | none                            | `The answer is N.` |

Flexible extraction takes the last number in the completion. Exact match removes ",", "$", everything up to
"#### " and a trailing "." from both sides and ignores case.
"""

from __future__ import annotations

import os
import re

from llm_jax.errors import UserError
from llm_jax.eval.fewshot import FEWSHOT_DELIMITER, fewshot_examples

STYLES = ("plain", "cot", "zeroshot-cot")
STRICT = {"plain": re.compile(r"#### (\-?[0-9\.\,]+)"), "cot": re.compile(r"The answer is (\-?[0-9\.\,]+).")}
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORE = [re.compile(r) for r in (",", r"\$", r"(?s).*#### ", r"\.$")]
INVALID = "[invalid]"
UNTIL = {"plain": ["Question:", "</s>", "<|im_end|>"], "cot": ["Q:", "</s>", "<|im_end|>"]}


def gold(answer: str) -> str:
    """The final answer: what follows `####` in a GSM8K solution."""
    return answer.split("####")[-1].strip()


def extract_strict(completion: str, style: str) -> str:
    m = STRICT["plain" if style == "plain" else "cot"].search(completion)
    return m.group(1) if m else INVALID


def extract_flexible(completion: str) -> str:
    """The last number (the harness's group_select -1: the last match, its first non-empty group)."""
    matches = FLEXIBLE.findall(completion)
    if not matches:
        return INVALID
    return next(g for g in matches[-1] if g)


def normalize(text: str) -> str:
    for regex in IGNORE:
        text = regex.sub("", text)
    return text.strip().lower()


def exact_match(prediction: str, reference: str) -> bool:
    return normalize(prediction) == normalize(reference)


def cot_exemplars() -> list[dict]:
    """The 8 worked chain-of-thought exemplars of lm-evaluation-harness's gsm8k-cot task, read from the installed
    `lm-eval` package: [{"question", "target"}, ...] with targets ending "The answer is N."."""
    try:
        import lm_eval
        import yaml
    except ImportError:
        raise UserError("--style cot with few-shot examples reads the worked exemplars that the lm-eval package "
                        "ships: pip install 'llm_jax[harness]' (or use --style plain / zeroshot-cot)") from None
    path = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "gsm8k", "gsm8k-cot.yaml")
    with open(path, encoding="utf-8") as f:
        return list(yaml.safe_load(f)["fewshot_config"]["samples"])


def prompts(items: list[dict], num_fewshot: int, style: str, n_scored: int | None = None,
            pool: list[dict] | None = None, sampler: str = "random") -> tuple[list[str], list]:
    """(the prompt of each of the first `n_scored` items, the stop strings) for `style`; plain few-shot examples
    come from `pool` or the other items."""
    if style not in STYLES:
        raise UserError(f"--style {style!r}: must be one of {', '.join(STYLES)}")
    scored = items[:n_scored]
    if style == "zeroshot-cot":
        if num_fewshot:
            raise UserError("--style zeroshot-cot is zero-shot: drop --num-fewshot (or use --style cot)")
        return [f"Q: {x['question']}\nA: Let's think step by step." for x in scored], UNTIL["cot"]
    if style == "cot":
        exemplars = cot_exemplars() if num_fewshot else []
        if num_fewshot > len(exemplars):
            raise UserError(f"--style cot has {len(exemplars)} worked exemplars; --num-fewshot {num_fewshot} asks "
                            f"for more")
        shots = [f"Q: {e['question']}\nA: {e['target']}" for e in exemplars[:num_fewshot]]
        return [FEWSHOT_DELIMITER.join(shots + [f"Q: {x['question']}\nA:"]) for x in scored], UNTIL["cot"]
    out = []
    for i, x in enumerate(scored):
        shots = [f"Question: {e['question']}\nAnswer: {e['answer']}"
                 for e in fewshot_examples(items, i, num_fewshot, pool, sampler)]
        out.append(FEWSHOT_DELIMITER.join(shots + [f"Question: {x['question']}\nAnswer:"]))
    return out, UNTIL["plain"]
