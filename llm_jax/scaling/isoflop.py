"""Chinchilla approaches 1 and 2: the compute-optimal model size read off training runs without a loss model.

Approach 1 takes training curves (many points per run): at each compute C the run with the lowest loss
(interpolated along its curve in log C) gives N_opt(C); power laws N_opt ∝ C^a and D_opt ∝ C^b are fitted to
that envelope. Approach 2 takes IsoFLOP profiles (final losses of several sizes at one budget): a parabola
in log N per budget gives its minimum N_opt(C), and the same power laws are fitted across budgets.
"""

from __future__ import annotations

import numpy as np

from llm_jax.scaling.fit import fit_power_law
from llm_jax.scaling.runs import Runs


def group_budgets(runs: Runs, tolerance_dex: float = 0.05) -> list[np.ndarray]:
    """Indices of the runs of each IsoFLOP budget: the `budget` column when present, else runs whose
    6ND agree within `tolerance_dex` decades (consecutive in sorted order)."""
    if runs.budget is not None:
        return [np.flatnonzero(runs.budget == b) for b in np.unique(runs.budget)]
    log_c = np.log10(runs.flops)
    order = np.argsort(log_c)
    groups, current = [], [order[0]]
    for prev, idx in zip(order[:-1], order[1:]):
        if log_c[idx] - log_c[prev] > tolerance_dex:
            groups.append(np.array(current))
            current = []
        current.append(idx)
    groups.append(np.array(current))
    return groups


def _allocation_laws(budgets, n_opt) -> dict:
    n_law = fit_power_law(budgets, n_opt)
    d_law = fit_power_law(budgets, np.asarray(budgets) / (6.0 * np.asarray(n_opt)))
    return {"a": n_law.exponent, "a_stderr": n_law.exponent_stderr, "n_coefficient": n_law.coefficient,
            "b": d_law.exponent, "b_stderr": d_law.exponent_stderr, "d_coefficient": d_law.coefficient}


def approach2(runs: Runs, tolerance_dex: float = 0.05) -> dict:
    """Parabola in log N through each budget's final losses; power laws over the budgets' minima."""
    profiles = []
    for idx in group_budgets(runs, tolerance_dex):
        sizes = np.unique(runs.params[idx])
        if len(sizes) < 3:
            continue
        x = np.log(runs.params[idx])
        c2, c1, c0 = np.polyfit(x, runs.loss[idx], 2)
        if c2 <= 0:
            continue      # no interior minimum: the budget's sizes do not bracket the optimum
        x_opt = -c1 / (2 * c2)
        budget = float(np.exp(np.mean(np.log(runs.flops[idx]))))
        profiles.append({"flops": budget, "params_opt": float(np.exp(x_opt)),
                         "tokens_opt": budget / (6.0 * float(np.exp(x_opt))),
                         "loss_opt": float(c0 + c1 * x_opt + c2 * x_opt**2),
                         "bracketed": bool(sizes.min() <= np.exp(x_opt) <= sizes.max()),
                         "coefficients": [float(c2), float(c1), float(c0)], "n_runs": int(len(idx))})
    out = {"profiles": profiles}
    if len(profiles) >= 2:
        out.update(_allocation_laws([p["flops"] for p in profiles], [p["params_opt"] for p in profiles]))
    return out


def approach1(runs: Runs, n_grid: int = 40) -> dict:
    """Minimum-loss envelope over training curves (needs a `run` column, several points per run)."""
    if runs.run is None:
        raise ValueError("approach 1 needs training curves: a `run` column with several points per run")
    curves = []
    for name in np.unique(runs.run):
        idx = np.flatnonzero(runs.run == name)
        idx = idx[np.argsort(runs.flops[idx])]
        if len(idx) >= 2:
            curves.append((np.log(runs.flops[idx]), runs.loss[idx], float(runs.params[idx[0]])))
    if len(curves) < 2:
        raise ValueError("approach 1 needs at least two runs with two or more points each")
    lo = min(c[0][0] for c in curves)
    hi = max(c[0][-1] for c in curves)
    envelope = []
    for log_c in np.linspace(lo, hi, n_grid):
        best = None
        for log_f, loss, size in curves:
            if log_f[0] <= log_c <= log_f[-1]:
                value = float(np.interp(log_c, log_f, loss))
                if best is None or value < best[0]:
                    best = (value, size)
        if best is not None:
            envelope.append({"flops": float(np.exp(log_c)), "loss": best[0], "params_opt": best[1]})
    out = {"envelope": envelope}
    if len({e["params_opt"] for e in envelope}) >= 2:
        out.update(_allocation_laws([e["flops"] for e in envelope], [e["params_opt"] for e in envelope]))
    return out
