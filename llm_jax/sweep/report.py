"""`llm-jax sweep report`: one row per member and one per variant (mean ± std over seeds), as CSV, markdown
and loss-curve PNG in the sweep's results directory, headed by the command that reproduces them. Every file is
written atomically: an interrupted report leaves the previous one whole."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import time

import numpy as np

from llm_jax.fileio import atomic_path, atomic_write
from llm_jax.models.accounting import active_params, flops_per_token, non_embedding_params, param_count
from llm_jax.scaling.command import fit_all, format_report
from llm_jax.scaling.plots import plot_fit, pyplot
from llm_jax.scaling.runs import load_runs
from llm_jax.sweep.runner import is_done, read_attempts, read_jsonl, read_log_lines, wall_seconds_sum
from llm_jax.sweep.spec import Sweep, SweepError, member_config, members, runs_root, workdir

MEMBER_COLUMNS = ("member", "variant", "seed", "params", "active_params", "non_embedding_params", "tokens", "flops",
                  "flops_6nd",
                  "final_eval_loss", "best_eval_loss", "tokens_per_sec", "wall_seconds")


def _eval_curve(records: list[dict]) -> list[tuple[int, float]]:
    """(tokens seen, eval loss), the last record winning where a resumed run repeated a step."""
    points = {}
    for r in records:
        if isinstance(r.get("eval_loss"), (int, float)):
            points[r.get("tokens_seen", 0)] = r["eval_loss"]
    return sorted(points.items())


# Downstream tasks (train.eval_tasks): every eval/<task>/<metric> a run logged goes to members.csv (its last value);
# the markdown table shows each task's headline metric, the first of these it has.
HEADLINE_METRICS = ("acc", "exact_match_strict")


def _downstream(records: list[dict]) -> dict[str, float]:
    """The last logged value of every eval/<task>/<metric> key (a resumed run's repeated steps: the later wins)."""
    out = {}
    for r in sorted(records, key=lambda r: r.get("step", 0)):
        out.update({k: v for k, v in r.items() if k.startswith("eval/") and isinstance(v, (int, float))})
    return out


def headline_columns(rows: list[dict]) -> list[str]:
    """eval/<task>/<metric> of each task's headline metric, tasks in the order they first appear."""
    keys = list(dict.fromkeys(k for r in rows for k in r if k.startswith("eval/")))
    out = []
    for task in dict.fromkeys(k.split("/")[1] for k in keys):
        metrics = [k.split("/", 2)[2] for k in keys if k.split("/")[1] == task]
        out.append(f"eval/{task}/{next((m for m in HEADLINE_METRICS if m in metrics), metrics[0])}")
    return out


ROUTING = ("stats/moe_expert_share_min", "stats/moe_expert_share_max", "stats/moe_dropped")


def _routing_curve(records: list[dict]) -> list[tuple]:
    """(tokens seen, smallest expert share, largest expert share, dropped fraction) of an MoE run's logged steps."""
    return sorted({r["tokens_seen"]: (r["tokens_seen"], *(r[k] for k in ROUTING)) for r in records
                   if all(isinstance(r.get(k), (int, float)) for k in ROUTING)}.values())


def member_rows(sweep: Sweep) -> tuple[list[dict], dict[str, list]]:
    """Finished members' numbers, and their curves: {member: eval curve} and {"routing:" + member: routing}."""
    rows, curves = [], {}
    for member in members(sweep):
        wd = workdir(sweep, member)
        if not is_done(sweep, member):
            continue
        cfg = member_config(sweep, member)
        records = read_jsonl(os.path.join(wd, "metrics.jsonl"))
        curve = _eval_curve(records)
        speeds = [r["tokens_per_sec"] for r in records if isinstance(r.get("tokens_per_sec"), (int, float))]
        tokens = max((r.get("tokens_seen", 0) for r in records), default=0)
        n_total, n_body = param_count(cfg.model), non_embedding_params(cfg.model)
        rows.append({
            "member": member.name, "variant": member.variant, "seed": member.seed, **member.meta,
            "params": n_total, "active_params": active_params(cfg.model), "non_embedding_params": n_body,
            "tokens": tokens,
            "flops": flops_per_token(cfg.model) * tokens,
            "flops_6nd": 6.0 * (active_params(cfg.model) - param_count(cfg.model) + n_body) * tokens,  # active N
            "final_eval_loss": curve[-1][1] if curve else float("nan"),
            "best_eval_loss": min(v for _, v in curve) if curve else float("nan"),
            "tokens_per_sec": float(np.median(speeds)) if speeds else float("nan"),
            "wall_seconds": wall_seconds_sum(read_attempts(wd)),
            **_downstream(records),
        })
        curves[member.name] = curve
        if _routing_curve(records):
            curves["routing:" + member.name] = _routing_curve(records)
    return rows, curves


def variant_rows(rows: list[dict]) -> list[dict]:
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        group = [r for r in rows if r["variant"] == variant]
        stat = lambda key: (float(np.mean([r[key] for r in group])),
                            float(np.std([r[key] for r in group], ddof=1)) if len(group) > 1 else 0.0)
        downstream = {key: stat(key) for key in headline_columns(group) if all(key in r for r in group)}
        out.append({"variant": variant, "seeds": len(group), "params": group[0]["params"],
                    "active_params": group[0]["active_params"],
                    "non_embedding_params": group[0]["non_embedding_params"], "tokens": group[0]["tokens"],
                    "flops": group[0]["flops"], "final_eval_loss": stat("final_eval_loss"),
                    "best_eval_loss": stat("best_eval_loss"), "tokens_per_sec": stat("tokens_per_sec"),
                    "downstream": downstream})
    return out


def _sweep_wall(sweep: Sweep) -> tuple[float, list[int]]:
    """Elapsed seconds of every `sweep run` invocation that ran members, and their --parallel values."""
    runs = read_jsonl(os.path.join(runs_root(sweep), "sweep_runs.jsonl"))
    if not runs:
        return float("nan"), []
    return wall_seconds_sum(runs), sorted({r.get("parallel", 1) for r in runs})


def _unfinished(sweep: Sweep) -> str:
    """Members that ran but did not finish (diverged, crashed, interrupted), with their last exit status."""
    lines = []
    for member in members(sweep):
        wd = workdir(sweep, member)
        attempts = read_attempts(wd)
        if attempts and not is_done(sweep, member):
            tail = [line for line in read_log_lines(os.path.join(wd, "train.log")) if line.strip()][-1:]
            lines.append(f"- `{member.name}`: exit status {attempts[-1].get('returncode', '?')} after "
                         f"{len(attempts)} attempt(s): {tail[0][:200] if tail else ''}")
    return "\n## Members that did not finish\n\n" + "\n".join(lines) + "\n" if lines else ""


def _cell(mean_std: tuple[float, float], seeds: int) -> str:
    return f"{mean_std[0]:.4f} ± {mean_std[1]:.4f}" if seeds > 1 else f"{mean_std[0]:.4f}"


def _markdown(sweep: Sweep, sweep_path: str, rows: list[dict], variants: list[dict]) -> str:
    wall = sum(r["wall_seconds"] for r in rows)
    downstream = headline_columns(rows)  # the final value of each downstream task's headline metric
    elapsed, parallel = _sweep_wall(sweep)
    lines = [f"# Sweep `{sweep.name}`", ""]
    if sweep.description:
        lines += [sweep.description, ""]
    lines += [f"- Command: `llm-jax sweep run {sweep_path} && llm-jax sweep report {sweep_path}`",
              f"- Wall time: {elapsed / 60:.1f} min elapsed running {len(rows)} members "
              f"(--parallel {'/'.join(map(str, parallel)) or '?'}; {wall / 60:.1f} min summed over members), "
              f"{platform.machine()} with {os.cpu_count()} CPU cores; reported {time.strftime('%Y-%m-%d')}",
              f"- Base config: `{sweep.base}`; seeds {sweep.seeds}; per-member values in `members.csv`", "",
              "| variant | params (non-emb.) | active params | tokens | FLOPs | final eval loss | best eval loss | "
              + "".join(f"{key.removeprefix('eval/').replace('/', ' ')} | " for key in downstream)
              + "tokens/s | seeds |",
              "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(downstream) + "---:|---:|"]
    best = min(v["final_eval_loss"][0] for v in variants) if variants else None
    for v in variants:
        final = _cell(v["final_eval_loss"], v["seeds"])
        if v["final_eval_loss"][0] == best:
            final = f"**{final}**"
        lines.append(f"| {v['variant']} | {v['params']:,} ({v['non_embedding_params']:,}) | {v['active_params']:,} | "
                     f"{v['tokens']:,} | "
                     f"{v['flops']:.3g} | {final} | {_cell(v['best_eval_loss'], v['seeds'])} | "
                     + "".join(f"{_cell(v['downstream'][k], v['seeds']) if k in v['downstream'] else '–'} | "
                               for k in downstream) +
                     f"{v['tokens_per_sec'][0]:,.0f} | {v['seeds']} |")
    lines += ["", "Mean ± sample standard deviation over seeds; losses in nats/token on the held-out split."
              + (" Downstream columns: each train.eval_tasks task's metric after the last step (every metric is in "
                 "members.csv)." if downstream else ""),
              "![eval loss curves](loss_curves.png)", ""]
    return "\n".join(lines)


def _plot(curves: dict[str, list], rows: list[dict], path: str, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        for j, r in enumerate(x for x in rows if x["variant"] == variant):
            tokens, losses = zip(*curves[r["member"]][1:]) if len(curves[r["member"]]) > 1 else ((), ())
            ax.plot(tokens, losses, color=f"C{i % 10}", lw=1.2, alpha=0.8, label=variant if j == 0 else None)
    ax.set(xlabel="training tokens", ylabel="eval loss (nats/token)", title=title)
    ax.set_xscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_png(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _plot_routing(curves: dict[str, list], rows: list[dict], path: str, title: str) -> None:
    """Per MoE variant: the smallest and largest expert share of the routed tokens over training (a perfectly
    balanced router keeps both at 1/E), and the dropped fraction when any run dropped tokens."""
    plt = pyplot()
    any_dropped = any(point[3] > 0 for name, c in curves.items() if name.startswith("routing:") for point in c)
    fig, axes = plt.subplots(1, 2 if any_dropped else 1, figsize=(10 if any_dropped else 6.5, 4.2), squeeze=False)
    share = axes[0][0]
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        for j, r in enumerate(x for x in rows if x["variant"] == variant and "routing:" + x["member"] in curves):
            tokens, low, high, drop = zip(*curves["routing:" + r["member"]])
            label = variant if j == 0 else None
            share.plot(tokens, high, color=f"C{i % 10}", lw=1.2, label=label)
            share.plot(tokens, low, color=f"C{i % 10}", lw=1.2, ls="--")
            if any_dropped:
                axes[0][1].plot(tokens, drop, color=f"C{i % 10}", lw=1.2, label=label)
    share.set(xlabel="training tokens", ylabel="expert share of routed tokens (max solid, min dashed)", title=title)
    if any_dropped:
        axes[0][1].set(xlabel="training tokens", ylabel="fraction of assignments dropped", title="capacity overflow")
    for ax in axes[0]:
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
    share.legend(fontsize=7)
    fig.tight_layout()
    with atomic_png(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _plot_grid(rows: list[dict], key: str, path: str, title: str) -> None:
    """Final eval loss against the one grid key (e.g. the learning rate), a line per declared variant."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, group in enumerate(dict.fromkeys(r["group"] for r in rows)):
        xs = sorted({r[key] for r in rows if r["group"] == group})
        ys = [np.mean([r["final_eval_loss"] for r in rows if r["group"] == group and r[key] == x]) for x in xs]
        ax.plot(xs, ys, "o-", color=f"C{i % 10}", label=group)
        best = int(np.nanargmin(ys))
        ax.plot([xs[best]], [ys[best]], "*", color=f"C{i % 10}", ms=14)
    ax.set(xscale="log", xlabel=key, ylabel="final eval loss (nats/token)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_png(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _isoflop_fit(rows: list[dict], curves: dict, out: str, log) -> str:
    """For IsoFLOP members (meta `budget`): the runs as a scaling-law table, fitted by approaches 1-3."""
    table = os.path.join(out, "isoflop.csv")
    _write_csv(table, [{"run": r["member"], "params": r["compute_params"], "tokens": r["tokens"],
                        "loss": r["final_eval_loss"], "budget": r["budget"]} for r in rows],
               ("run", "params", "tokens", "loss", "budget"))
    curve_table = os.path.join(out, "isoflop_curves.csv")
    _write_csv(curve_table, [{"run": r["member"], "params": r["compute_params"], "tokens": t, "loss": v}
                             for r in rows for t, v in curves[r["member"]] if t > 0],
               ("run", "params", "tokens", "loss"))
    runs = load_runs(table)
    budgets = sorted({r["budget"] for r in rows})
    budgets.append(10 * budgets[-1])              # the study's budgets, and one decade past them
    fits = fit_all(runs, ["3", "2"], bootstrap=200, budgets=budgets, log=log)
    fits["approach1"] = fit_all(load_runs(curve_table), ["1"], bootstrap=0, budgets=budgets, log=log)["approach1"]
    with atomic_png(os.path.join(out, "scaling_fit.png")) as tmp:
        plot_fit(runs, fits["fit"], tmp, approach2=fits["approach2"], approach1=fits["approach1"],
                 title="IsoFLOP study: fits of approaches 1-3")
    text = format_report(fits)
    fits.pop("fit")
    atomic_write(os.path.join(out, "scaling_fit.json"), json.dumps(fits, indent=1, sort_keys=True))
    return text


@contextlib.contextmanager
def atomic_png(path: str):
    """A temporary *.png path (plotting libraries pick the format from the name) renamed onto `path` when the
    block succeeds; on failure `path` keeps its previous content."""
    with atomic_path(path) as tmp:
        png = tmp + ".png"
        try:
            yield png
            os.replace(png, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(png)


def _write_csv(path: str, rows: list[dict], columns) -> None:
    extra = [k for r in rows for k in r if k not in columns]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(columns) + list(dict.fromkeys(extra)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())


def report(sweep: Sweep, sweep_path: str, log=print) -> dict:
    rows, curves = member_rows(sweep)
    if not rows:
        raise SweepError(f"sweep {sweep.name}: no finished members under {runs_root(sweep)} "
                         f"(run `llm-jax sweep run {sweep_path}` first)")
    out = sweep.results_dir
    os.makedirs(out, exist_ok=True)
    _write_csv(os.path.join(out, "members.csv"), rows, MEMBER_COLUMNS)
    _write_csv(os.path.join(out, "curves.csv"),
               [{"run": r["member"], "params": r["params"], "non_embedding_params": r["non_embedding_params"],
                 "tokens": tokens, "loss": loss} for r in rows for tokens, loss in curves[r["member"]] if tokens > 0],
               ("run", "params", "non_embedding_params", "tokens", "loss"))
    variants = variant_rows(rows)
    markdown = _markdown(sweep, sweep_path, rows, variants) + _unfinished(sweep)
    if len(sweep.grid) == 1:
        key = next(iter(sweep.grid))
        _plot_grid(rows, key, os.path.join(out, "grid.png"), f"sweep {sweep.name}: final loss vs {key}")
        markdown += f"\n![final loss against {key}](grid.png)\n"
    if all("budget" in r for r in rows):
        fit_text = _isoflop_fit(rows, curves, out, log=lambda _: None)
        markdown += ("\n## Scaling-law fits (`isoflop.csv`, `isoflop_curves.csv`; N = FLOPs per token / 6)\n\n"
                     f"```\n{fit_text}\n```\n\n![fits](scaling_fit.png)\n")
    if any(name.startswith("routing:") for name in curves):
        _plot_routing(curves, rows, os.path.join(out, "routing.png"), f"sweep {sweep.name}: expert load")
        markdown += "\n![expert load over training](routing.png)\n"
    atomic_write(os.path.join(out, "README.md"), markdown)
    _plot(curves, rows, os.path.join(out, "loss_curves.png"), f"sweep {sweep.name}")
    expected = len(members(sweep))
    log(markdown)
    log(f"{len(rows)} of {expected} members finished; wrote members.csv, curves.csv, README.md, "
        f"loss_curves.png to {out}")
    return {"results_dir": out, "finished": len(rows), "members": expected, "variants": variants}
