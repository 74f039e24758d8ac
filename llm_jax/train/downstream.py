"""Downstream tasks during training (`train.eval_tasks`): at every evaluation (the start, each `eval_every` steps
and the end) the current parameters answer each task, and its scalar metrics are logged as
`eval/<name>/<metric>` (acc, acc_norm, exact_match_strict, ... and their standard errors, n) beside `eval_loss`.

The scoring itself is evaluation's (`llm_jax.eval.tasks.run_task` on an `EvalModel`): the training loop does not
import eval/ (train and eval share the model builder and checkpoint I/O, not each other: tests/test_layers.py).
The command hands `train` a `task_runner` (`llm_jax.eval.in_training.task_runner`), a factory
`(cfg, workdir, log) -> score` where `score(model, params, tokenizer, step) -> {task name: {metric: value}}`.

Where it runs: in one process, on the run's own mesh (the parameters stay where they are; a model too big for
one device is scored sharded). With several processes, the parameters are gathered and process 0 scores them
on one of its devices (the others carry on; only process 0 writes metrics).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from llm_jax.config import MESH_AXES, ConfigError
from llm_jax.models import build_model
from llm_jax.parallel.mesh import activate


class Downstream:
    """`(params, step) -> {"eval/<name>/<metric>": value}` for the run's `train.eval_tasks` (empty without tasks,
    and on processes other than 0 when there are several); `line` is the last call's console line ("" if none)."""

    def __init__(self, cfg, workdir: str, tokenizer, task_runner, rules, log=print):
        self.enabled, self.line = bool(cfg.train.eval_tasks), ""
        if not self.enabled:
            return
        if task_runner is None:
            raise ConfigError("train.eval_tasks: this caller of train() passed no task_runner (`llm-jax train` "
                              "passes llm_jax.eval.in_training.task_runner); leave train.eval_tasks empty here")
        self.cfg, self.tokenizer, self.rules = cfg, tokenizer, rules
        # The plain module (no pipeline stages): the same function of the same parameters as the training one,
        # built once so that the scoring functions compile once per shape.
        self.model = build_model(cfg.model)
        self.primary = jax.process_index() == 0
        self.score = task_runner(cfg, workdir, log) if self.primary else None
        self.seconds = 0.0

    def __call__(self, params, step: int) -> dict:
        if not self.enabled:
            return {}
        start = time.perf_counter()
        if jax.process_count() > 1:
            host = multihost_utils.process_allgather(params, tiled=True)  # every process takes part
            if not self.primary:
                return {}
            device = jax.local_devices()[0]
            one = Mesh(np.asarray([device]).reshape((1,) * len(MESH_AXES)), MESH_AXES)
            with activate(one, self.rules):
                results = self.score(self.model, jax.device_put(host, device), self.tokenizer, step)
        else:
            results = self.score(self.model, params, self.tokenizer, step)
        self.seconds = time.perf_counter() - start
        out = {f"eval/{name}/{metric}": float(value) for name, metrics in results.items()
               for metric, value in metrics.items()}
        self.line = progress_line(step, results, self.seconds)
        return out


HEADLINE = ("acc", "acc_norm", "exact_match_strict", "exact_match_flexible")


def progress_line(step: int, results: dict, seconds: float) -> str:
    """One console line: each task's headline metrics."""
    parts = []
    for name, metrics in results.items():
        shown = " ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE if k in metrics)
        parts.append(f"{name} {shown} (n {int(metrics.get('n', 0))})")
    return f"step {step} | tasks: " + " | ".join(parts) + f" | {seconds:.1f}s"
