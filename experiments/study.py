"""What the fine-tuning, alignment, pruning and distillation studies share: running `llm-jax`, held-out perplexity
on fixed windows, and their command line.

A study is `run(workdir) -> results` (writes nothing else into the repository) and `report(results)` (writes
results/README.md and the plots); `main` runs both, or with --report only the second from results/results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# CPU studies: without this, a script that imports JAX itself (to score results) starts libtpu's runtime when the
# `tpu` extra is installed and holds its lock file, which makes every other `llm-jax compile` on the machine fail.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def llm_jax(*args) -> str:
    """Runs `python -m llm_jax ARGS` from the repository root; returns stdout (stderr passes through)."""
    proc = subprocess.run([sys.executable, "-m", "llm_jax", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"llm-jax {' '.join(map(str, args))} failed with status {proc.returncode}")
    return proc.stdout


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def main(doc: str, run, report, results_dir: str, default_workdir: str, extra_args=()) -> None:
    """`extra_args`: (flag, default, help) of more --options, passed to run() as keywords."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(REPO, default_workdir))
    for flag, default, text in extra_args:
        parser.add_argument(flag, default=default, help=text)
    parser.add_argument("--report", action="store_true", help="rewrite README.md and the plot from results.json")
    args = parser.parse_args()
    path = os.path.join(results_dir, "results.json")
    if args.report:
        with open(path) as f:
            results = json.load(f)
    else:
        extra = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
                 for flag, _, _ in extra_args}
        results = run(args.workdir, **extra)
        os.makedirs(results_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    report(results)


def held_out_windows(base: str, count: int):
    """(count, seq_len + 1) token windows of work directory `base`'s validation split (its data and tokenizer)."""
    import numpy as np
    from llm_jax.data.pipeline import training_data
    from llm_jax.infer.load import read_config
    val = training_data(read_config(base), log=lambda _: None).val
    return np.stack([val[i]["tokens"] for i in range(min(count, len(val)))])


def perplexity(workdir: str, windows) -> float:
    """exp(mean next-token cross-entropy) of a work directory's model over `windows`, 8 at a time."""
    import jax
    import optax
    from llm_jax.infer.load import load_workdir
    loaded = load_workdir(workdir)
    forward = jax.jit(lambda p, x: loaded.model.apply({"params": p}, x))
    losses = []
    for start in range(0, len(windows), 8):
        chunk = windows[start:start + 8]
        logits = forward(loaded.params, chunk[:, :-1])
        losses.append(float(optax.softmax_cross_entropy_with_integer_labels(logits, chunk[:, 1:]).mean()))
    return math.exp(sum(losses) / len(losses))
