"""`llm-jax scaling fit`: fit a CSV of runs with Chinchilla approaches 1-3 and Kaplan's power laws."""

from __future__ import annotations

import json
import sys

import numpy as np

from llm_jax import argtypes
from llm_jax.scaling import fit as fitting
from llm_jax.scaling import isoflop
from llm_jax.scaling.plots import plot_fit
from llm_jax.scaling.runs import RunsError, load_runs

ALLOCATION_BUDGETS = (1e18, 1e20, 1e22, 5.76e23, 1e24)   # 5.76e23: Chinchilla's (and Gopher's) budget


def add_parser(sub) -> None:
    s = sub.add_parser("scaling", help="fit scaling laws to a CSV of runs")
    s.add_argument("action", choices=["fit"])
    s.add_argument("--csv", required=True, help="runs: params/Model Size, tokens or Training FLOP, loss")
    s.add_argument("--approach", default="auto",
                   help="comma-separated of 1,2,3 (default: 3, plus 2 with a budget column, 1 with a run column)")
    s.add_argument("--exclude-highest-loss", type=argtypes.nonneg_int, default=0, metavar="K", help="drop the K worst points")
    s.add_argument("--bootstrap", type=argtypes.nonneg_int, default=200, help="approach 3 resamples for the intervals; 0 = none")
    s.add_argument("--starts", choices=["full", "coarse"], default="full",
                   help="approach 3 grid of L-BFGS starts: Besiroglu et al.'s 4,500, or 432")
    s.add_argument("--budgets", help="comma-separated FLOP budgets for the compute-optimal table")
    s.add_argument("--plot", help="write a PNG of the data, the fits and the frontier here")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_scaling)


def _approaches(arg: str, runs) -> list[str]:
    if arg == "auto":
        return ["3"] + (["2"] if runs.budget is not None else []) + (["1"] if runs.run is not None else [])
    chosen = [a.strip() for a in arg.split(",")]
    bad = [a for a in chosen if a not in ("1", "2", "3")]
    if bad:
        raise ValueError(f"--approach takes 1, 2 and/or 3, not {bad}")
    return chosen


def fit_all(runs, approaches, *, bootstrap=200, starts="full", budgets=ALLOCATION_BUDGETS, log=print) -> dict:
    out: dict = {"n_points": len(runs), "kaplan": fitting.kaplan_laws(runs), "fit": None}
    if "3" in approaches:
        grid = fitting.FULL_GRID if starts == "full" else fitting.COARSE_GRID
        log(f"approach 3: L-BFGS from {int(np.prod([len(g) for g in grid])):,} starts on {len(runs)} points ...")
        fit = fitting.fit_parametric(runs, grid=grid)
        out["fit"] = fit
        a3 = {"values": fit.values(), "huber_objective": fit.objective}
        if bootstrap:
            log(f"approach 3: {bootstrap} bootstrap resamples ...")
            a3["intervals_95"] = fitting.bootstrap_parametric(runs, fit, samples=bootstrap)
        opt = fitting.compute_optimal(fit, budgets)
        a3["allocation"] = {"a": opt["a"], "b": opt["b"], "budgets": [
            {"flops": c, "params": float(n), "tokens": float(d), "tokens_per_param": float(r)}
            for c, n, d, r in zip(budgets, opt["params"], opt["tokens"], opt["tokens_per_param"])]}
        a3["reference"] = {"besiroglu_2024": fitting.BESIROGLU_2024, "hoffmann_2022": fitting.HOFFMANN_2022}
        out["approach3"] = a3
    if "2" in approaches:
        out["approach2"] = isoflop.approach2(runs)
    if "1" in approaches:
        out["approach1"] = isoflop.approach1(runs)
    for key in ("approach1", "approach2"):
        if key in out and "a" in out[key]:
            out[key]["allocation"] = _power_law_allocation(out[key], budgets)
    return out


def _power_law_allocation(res: dict, budgets) -> list[dict]:
    """N_opt(C) = k C^a from approach 1 or 2, and D_opt = C / (6 N_opt), at each budget."""
    rows = []
    for c in budgets:
        n = res["n_coefficient"] * c ** res["a"]
        rows.append({"flops": c, "params": n, "tokens": c / (6 * n), "tokens_per_param": c / (6 * n * n)})
    return rows


def format_report(out: dict) -> str:
    lines = [f"{out['n_points']} points"]
    a3 = out.get("approach3")
    if a3:
        ref_b, ref_h = a3["reference"]["besiroglu_2024"], a3["reference"]["hoffmann_2022"]
        lines.append("approach 3: L(N, D) = E + A/N^alpha + B/D^beta")
        lines.append(f"  {'':6} {'fit':>10} {'95% interval':>24} {'Besiroglu 2024':>15} {'Hoffmann 2022':>14}")
        for name in fitting.NAMES:
            iv = a3.get("intervals_95", {}).get(name)
            interval = f"[{iv['low']:.4g}, {iv['high']:.4g}]" if iv else "-"
            lines.append(f"  {name:6} {a3['values'][name]:>10.4g} {interval:>24} {ref_b[name]:>15.4g} "
                         f"{ref_h[name]:>14.4g}")
        al = a3["allocation"]
        lines.append(f"  compute-optimal: N* ∝ C^{al['a']:.3f}, D* ∝ C^{al['b']:.3f}")
        for row in al["budgets"]:
            lines.append(f"    C = {row['flops']:.3g}: N* = {row['params']:.3g}, D* = {row['tokens']:.3g}, "
                         f"{row['tokens_per_param']:.1f} tokens/parameter")
    for key in ("approach2", "approach1"):
        res, label = out.get(key), key.replace("approach", "approach ")
        if res and "a" in res:
            lines.append(f"{label}: N_opt ∝ C^{res['a']:.3f} ± {res['a_stderr']:.3f}, "
                         f"D_opt ∝ C^{res['b']:.3f} ± {res['b_stderr']:.3f}")
            lines += [f"    C = {r['flops']:.3g}: N_opt = {r['params']:.3g}, D_opt = {r['tokens']:.3g}, "
                      f"{r['tokens_per_param']:.1f} tokens/parameter" for r in res["allocation"]]
        elif res is not None:
            lines.append(f"{label}: too few budgets/runs for a power law")
    for name, law in out["kaplan"].items():
        lines.append(f"Kaplan {name}: alpha = {law['alpha']:.4f} ± {law['alpha_stderr']:.4f} "
                     f"(critical scale {law['critical_scale']:.3g}, {law['n_points']} points)")
    return "\n".join(lines)


def cmd_scaling(args, extra) -> int:
    if extra:
        raise RunsError(f"unrecognised arguments: {' '.join(extra)}")
    runs = load_runs(args.csv).exclude_highest_loss(args.exclude_highest_loss)
    try:
        approaches = _approaches(args.approach, runs)
        budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else ALLOCATION_BUDGETS
    except ValueError as e:
        raise RunsError(str(e)) from None
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    out = fit_all(runs, approaches, bootstrap=args.bootstrap, starts=args.starts, budgets=budgets, log=log)
    if args.plot:
        plot_fit(runs, out["fit"], args.plot, approach2=out.get("approach2"), approach1=out.get("approach1"),
                 title=args.csv)
        log(f"plot -> {args.plot}")
    out["excluded_highest_loss"] = args.exclude_highest_loss
    fit = out.pop("fit")
    if args.json:
        flat = dict(fit.values()) if fit else {}
        if fit and "intervals_95" in out["approach3"]:
            flat["intervals"] = out["approach3"]["intervals_95"]
        print(json.dumps({**flat, **out}, sort_keys=True))
    else:
        print(format_report(out))
    return 0
