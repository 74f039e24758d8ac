"""PNG figures of scaling fits: the data with the fitted IsoFLOP curves, and the compute-optimal frontier."""

from __future__ import annotations

import numpy as np

from llm_jax.scaling.fit import ParametricFit, compute_optimal
from llm_jax.scaling.runs import Runs, RunsError


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or one clear error where the `plots` extra is missing."""
    try:
        import matplotlib
    except ImportError:
        raise RunsError("plots need matplotlib: pip install -e '.[plots]' (make train/test install it)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_fit(runs: Runs, fit: ParametricFit | None, path: str, *, approach2: dict | None = None,
             approach1: dict | None = None, title: str = "") -> str:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    log_c = np.log10(runs.flops)
    points = left.scatter(runs.params, runs.loss, c=log_c, cmap="viridis", s=14)
    fig.colorbar(points, ax=left, label="log10 training FLOP (6ND)")
    budgets = [p["flops"] for p in (approach2 or {}).get("profiles", [])] or list(
        10 ** np.quantile(log_c, [0.1, 0.5, 0.9]))
    if fit is not None:
        sizes = np.geomspace(runs.params.min() / 2, runs.params.max() * 2, 200)
        for budget in budgets:
            color = plt.cm.viridis((np.log10(budget) - log_c.min()) / max(np.ptp(log_c), 1e-9))
            left.plot(sizes, fit.predict(sizes, budget / (6 * sizes)), color=color, lw=1)
        left.set_ylim(runs.loss.min() * 0.95, runs.loss.max() * 1.05)
    left.set(xscale="log", xlabel="parameters N", ylabel="loss", title="runs and fitted IsoFLOP curves")

    frontier = np.geomspace(runs.flops.min() / 3, runs.flops.max() * 30, 100)
    if fit is not None:
        opt = compute_optimal(fit, frontier)
        right.plot(frontier, opt["params"], "k-", label=f"approach 3: N* ∝ C^{opt['a']:.3f}")
    if approach2 and approach2.get("profiles"):
        p = approach2["profiles"]
        right.scatter([q["flops"] for q in p], [q["params_opt"] for q in p], color="C1", zorder=3,
                      label="approach 2: IsoFLOP minima" + (f" (a = {approach2['a']:.3f})" if "a" in approach2 else ""))
    if approach1 and approach1.get("envelope"):
        e = approach1["envelope"]
        right.plot([q["flops"] for q in e], [q["params_opt"] for q in e], "C2.", label="approach 1: envelope")
    right.set(xscale="log", yscale="log", xlabel="training FLOP C", ylabel="compute-optimal parameters N*",
              title="compute-optimal frontier")
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
