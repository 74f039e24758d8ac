"""Sparsity versus held-out perplexity for every pruning method, before and after recovery fine-tuning.

1. Base: runs/tiny (`make train`: configs/tiny.py, 700 steps on Shakespeare); trained here if absent.
2. Pruned copies (`llm-jax prune`): magnitude at 30 / 50 / 70 / 90% of every projection, N:M 2:4, 1 and 2 of 4
   heads per layer, 25 and 50% of the FFN neurons, 1 and 2 of 4 layers.
3. Recovery: 100 steps (8 x 256 tokens, lr 1e-3) of the same pretraining data from each pruned copy; the masks
   keep unstructured zeros at zero. Control: the same 100 steps from the unpruned model (what the extra training
   alone gives).
4. Held-out perplexity on the same 64 validation windows of 256 tokens (the base run's held-out scenes) before
   and after recovery; the share of the layer stack's projection weights removed (for structured methods the
   parameters removed there). Writes results/README.md, results/results.json, results/sparsity_vs_perplexity.png.

Run: python experiments/prune/run.py [--workdir runs/prune] [--report]   (~25 min on a 2-core CPU; variants already
in results/results.json for the same base perplexity are kept, not run again; the pruned and recovered
directories under --workdir are reused too: delete them after changing a variant)
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(HERE))

from study import held_out_windows, llm_jax, main, perplexity  # noqa: E402  (experiments/study.py)

VARIANTS = {"magnitude_30": ["--method", "magnitude", "--sparsity", "0.3"],
            "magnitude_50": ["--method", "magnitude", "--sparsity", "0.5"],
            "magnitude_70": ["--method", "magnitude", "--sparsity", "0.7"],
            "magnitude_90": ["--method", "magnitude", "--sparsity", "0.9"],
            "nm_2of4": ["--method", "nm", "--n", "2", "--m", "4"],
            "heads_25": ["--method", "heads", "--fraction", "0.25"],
            "heads_50": ["--method", "heads", "--fraction", "0.5"],
            "neurons_25": ["--method", "neurons", "--fraction", "0.25"],
            "neurons_50": ["--method", "neurons", "--fraction", "0.5"],
            "layers_1": ["--method", "layers", "--count", "1"],
            "layers_2": ["--method", "layers", "--count", "2"],
            "control": []}  # no pruning: the recovery steps alone
RECOVERY = {"train.steps": 100, "train.lr": 1e-3, "train.lr_min": 1e-4, "train.warmup_steps": 10,
            "train.eval_every": 0, "checkpoint.every": 0}


def projection_weights(workdir: str) -> int:
    import numpy as np
    from llm_jax.infer.load import load_workdir
    layers = load_workdir(workdir).params["layers"]
    kernels = [layers["attention"][k]["kernel"] for k in ("query", "key", "value", "out")] + [
        v["kernel"] for k, v in layers["mlp"].items()]
    masks = [layers["attention"][k].get("kernel_mask") for k in ("query", "key", "value", "out")] + [
        v.get("kernel_mask") for v in layers["mlp"].values()]
    return sum(int(np.size(k)) if m is None else int(np.asarray(m).sum()) for k, m in zip(kernels, masks))


def run(workdir: str) -> dict:
    base = os.path.join(REPO, "runs", "tiny")
    if not os.path.isdir(os.path.join(base, "checkpoints")):
        llm_jax("train", "--workdir", base)
    windows = held_out_windows(base, 64)
    dense_weights = projection_weights(base)
    results = {"date": time.strftime("%Y-%m-%d"), "base": "runs/tiny (configs/tiny.py, 700 steps)",
               "windows": len(windows), "base_perplexity": perplexity(base, windows), "variants": {}}
    previous = {}
    if os.path.isfile(os.path.join(RESULTS, "results.json")):
        with open(os.path.join(RESULTS, "results.json")) as f:
            kept = json.load(f)
        if kept["base_perplexity"] == results["base_perplexity"] and kept["windows"] == results["windows"]:
            previous = kept["variants"]
    for name, args in VARIANTS.items():
        if previous.get(name, {}).get("args") == args:
            results["variants"][name] = previous[name]
            print(f"{name}: kept from results.json", flush=True)
            continue
        pruned, recovered = os.path.join(workdir, name), os.path.join(workdir, name + "_recovered")
        if not args:
            pruned = base
        elif not os.path.isdir(os.path.join(pruned, "checkpoints")):
            llm_jax("prune", "--workdir", base, "--out", pruned, *args)
        before = perplexity(pruned, windows)
        started = time.time()
        llm_jax("train", "--config", os.path.join(pruned, "config.json"), "--workdir", recovered,
                f"--config.checkpoint.restore_from={pruned}", *[f"--config.{k}={v}" for k, v in RECOVERY.items()])
        results["variants"][name] = {
            "args": args, "removed": 1 - projection_weights(pruned) / dense_weights, "before": before,
            "after": perplexity(recovered, windows), "recovery_seconds": time.time() - started,
            "date": time.strftime("%Y-%m-%d")}
        v = results["variants"][name]
        print(f"{name}: removed {100 * v['removed']:.0f}% | perplexity {results['base_perplexity']:.1f} -> "
              f"{before:.1f} -> {v['after']:.1f} after recovery", flush=True)
    return results


def report(results: dict) -> None:
    base = results["base_perplexity"]
    lines = ["# Pruning: sparsity versus held-out perplexity, before and after recovery", "",
             f"Measured {results['date']} by `python experiments/prune/run.py` on a 2-core CPU: {results['base']}, "
             f"perplexity on {results['windows']} held-out windows of 256 tokens (the run's validation scenes): "
             f"**{base:.2f}** unpruned. Recovery: 100 steps of 8 x 256 tokens of the same pretraining data "
             "(lr 1e-3, masks kept).", "",
             "| pruned copy | `llm-jax prune` | projection weights removed | perplexity pruned | after recovery |",
             "|---|---|---|---|---|"]
    control = results["variants"].get("control")
    for name, v in results["variants"].items():
        if v is not control:
            lines.append(f"| {name} | `{' '.join(v['args'])}` | {100 * v['removed']:.1f}% | {v['before']:.2f} | "
                         f"{v['after']:.2f} |")
    if control:
        lines.append(f"| control: unpruned | (none) | 0% | {control['before']:.2f} | {control['after']:.2f} |")
        lines += ["", f"The control is the unpruned model given the same 100 recovery steps: {control['after']:.2f}. "
                  "A recovered copy is to be read against it, not against the unpruned model before those steps "
                  f"({base:.2f}): the extra training alone lowers perplexity."]
    lines += ["", "Projection weights: the attention and feed-forward kernels of the layer stack (what the methods "
              "prune); for structured methods, the share of them the smaller model no longer has.", "",
              "![sparsity vs perplexity](sparsity_vs_perplexity.png)", ""]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "README.md"), "w") as f:
        f.write("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    families = {}
    for name, v in results["variants"].items():
        if v is not control:
            families.setdefault(name.rsplit("_", 1)[0], []).append(v)
    for family, vs in families.items():
        vs = sorted(vs, key=lambda v: v["removed"])
        x = [100 * v["removed"] for v in vs]
        line, = ax.plot(x, [v["before"] for v in vs], "o--", label=f"{family} (pruned)")
        ax.plot(x, [v["after"] for v in vs], "o-", color=line.get_color(), label=f"{family} (recovered)")
    ax.axhline(base, color="k", lw=0.8, label="unpruned")
    if control:
        ax.axhline(control["after"], color="k", lw=0.8, ls=":", label="unpruned + the recovery steps")
    ax.set_yscale("log")
    ax.set_xlabel("projection weights removed (%)")
    ax.set_ylabel("held-out perplexity")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "sparsity_vs_perplexity.png"), dpi=120)


if __name__ == "__main__":
    main(__doc__, run, report, RESULTS, os.path.join("runs", "prune"))
