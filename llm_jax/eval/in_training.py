"""`train.eval_tasks`' scorer: what `llm-jax train` hands the training loop (llm_jax/train/downstream.py) so that
the current parameters answer the run's downstream tasks at every evaluation, through the same `run_task` and
`EvalModel` as `llm-jax eval choice|generate` on a saved checkpoint (the numbers agree: tests/train/test_eval_tasks.py).

A task path `shakespeare:next_line` or `shakespeare:speaker` is generated (`shakespeare.write_tasks`) into
`<workdir>/eval_tasks/` once; a resumed run reuses the files. Every task file is read once before training
starts, so a missing or malformed one stops the run before any step.
"""

from __future__ import annotations

import os

from llm_jax.config import resolved_eval_tasks
from llm_jax.errors import UserError
from llm_jax.eval import formats, shakespeare
from llm_jax.eval.lm import EvalModel
from llm_jax.eval.tasks import run_task
from llm_jax.infer.load import LoadedModel

TASKS_DIR = "eval_tasks"


def task_files(cfg, workdir: str) -> list[dict]:
    """The run's resolved train.eval_tasks entries, their paths made concrete (Shakespeare tasks written)."""
    tasks = [dict(t) for t in resolved_eval_tasks(cfg)]
    generated = {f"shakespeare:{name.removeprefix('shakespeare_')}": os.path.join(workdir, TASKS_DIR, f"{name}.jsonl")
                 for name in shakespeare.TASKS}
    needed = [t for t in tasks if t["path"] in generated]
    if needed and not all(os.path.isfile(generated[t["path"]]) for t in needed):
        shakespeare.write_tasks(os.path.join(workdir, TASKS_DIR))
    for t in tasks:
        t["path"] = generated.get(t["path"], t["path"])
        try:
            formats.read(t["path"], t["kind"], t["fmt"])
        except (UserError, OSError) as e:
            raise UserError(f"train.eval_tasks {t['name']!r}: {e}") from e
    return tasks


def task_runner(cfg, workdir: str, log=print):
    """`score(model, params, tokenizer, step) -> {task name: {metric: value}}` over the run's tasks (scalars only:
    per-item log-likelihoods and completions are left out)."""
    tasks = task_files(cfg, workdir)

    def score(model, params, tokenizer, step: int) -> dict:
        lm = EvalModel(LoadedModel(cfg, model, params, tokenizer, step), log=log)
        out = {}
        for t in tasks:
            extra = {"style": t["style"], "max_new_tokens": t["max_new_tokens"]} if t["kind"] == "generate" else {}
            result = run_task(lm, t["kind"], t["path"], fmt=t["fmt"], num_fewshot=t["num_fewshot"],
                              limit=t["limit"] or None, **extra)
            out[t["name"]] = {k: float(v) for k, v in result.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return out

    return score
