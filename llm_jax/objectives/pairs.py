"""What the preference objectives (reward models, DPO) share: both replies of a pair in one forward pass.

A batch of pairs (llm_jax/data/preferences.py) holds `chosen_*` and `rejected_*` (inputs, targets, weights; B x L
each) and `weights` (B x 1: 1 for a real pair). `both` stacks the sides into one 2B-row batch; `halves` splits a
per-row result back into (chosen, rejected).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

SIDES = ("chosen", "rejected")
PAIR_FIELDS = tuple(f"{s}_{f}" for s in SIDES for f in ("inputs", "targets", "weights")) + ("weights",)
PAIR_SHAPES = tuple((f"{s}_weights", ("B", "L"), "float32") for s in SIDES) + (("weights", ("B", 1), "float32"),)


def both(batch, field: str):
    return jnp.concatenate([batch[f"chosen_{field}"], batch[f"rejected_{field}"]], axis=0)


def halves(x):
    n = x.shape[0] // 2
    return x[:n], x[n:]


def sequence_logps(model, params, batch, rng, deterministic: bool, apply):
    """(log p(chosen reply), log p(rejected reply)) summed over each reply's trained tokens, (B,) each, and the
    model's `Sown`; `apply` is objectives.base.apply_with_aux."""
    inputs, targets, weights = both(batch, "inputs"), both(batch, "targets"), both(batch, "weights")
    if model.cfg.loss_chunk:
        ce_BL, sown = apply(model, params, inputs, targets_BL=targets, rng=rng, deterministic=deterministic)
    else:
        logits_BLV, sown = apply(model, params, inputs, rng=rng, deterministic=deterministic)
        ce_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, targets)
    return (*halves(-jnp.sum(ce_BL * weights, axis=1)), sown)
