"""IsoFLOP sweeps: for each compute budget C, a ladder of model shapes, each trained on tokens = C / (6N).

N here counts every weight a token is multiplied by plus attention's score work — the accounting's
`flops_per_token / 6` — so that the budget is what the run really computes, not only its non-embedding part
(at tiny scale the output layer is a large share of the FLOPs). Learning rate and batch size come from rules
the sweep file passes in (functions of the model config).
"""

from __future__ import annotations

from typing import Callable

from llm_jax.config import load_config
from llm_jax.models.accounting import flops_per_token


def shape(d_model: int, n_layers: int, head_dim: int = 32) -> dict:
    """A point on a width/depth ladder: heads of `head_dim`, the FFN width derived by the base config."""
    return {"model.d_model": d_model, "model.n_layers": n_layers, "model.n_heads": max(1, d_model // head_dim)}


def isoflop_variants(base: str, budgets: list[float], shapes: list[dict] | dict[float, list[dict]], *,
                     base_overrides: dict | None = None,
                     lr_rule: Callable | None = None, batch_rule: Callable | None = None,
                     min_steps: int = 50) -> tuple[dict[str, dict], dict[str, dict]]:
    """Variants (name -> overrides) and their metadata (budget, N, tokens) for every budget x shape.

    `shapes` is one ladder for every budget, or a ladder per budget (bracketing each budget's optimum).
    A shape whose run would be shorter than `min_steps` at a budget is left out of that budget."""
    variants, meta = {}, {}
    for budget in budgets:
        for s in (shapes[budget] if isinstance(shapes, dict) else shapes):
            overrides = {**(base_overrides or {}), **s}
            cfg = load_config(base, {k: str(v) for k, v in overrides.items()})
            if batch_rule:
                overrides["train.batch_size"] = batch_rule(cfg.model)
                cfg.train.batch_size = overrides["train.batch_size"]
            if lr_rule:
                overrides["train.lr"] = lr_rule(cfg.model)
            per_token = flops_per_token(cfg.model)
            steps = round(budget / per_token / (cfg.train.batch_size * cfg.model.seq_len))
            if steps < min_steps:
                continue
            overrides["train.steps"] = steps
            overrides["train.warmup_steps"] = max(1, min(cfg.train.warmup_steps, steps // 10))
            name = f"C{budget:.0e}-d{cfg.model.d_model}-L{cfg.model.n_layers}".replace("+", "")
            variants[name] = overrides
            meta[name] = {"budget": budget, "compute_params": per_token / 6.0,
                          "planned_tokens": steps * cfg.train.batch_size * cfg.model.seq_len}
    return variants, meta
