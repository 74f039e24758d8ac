"""Reward modelling (the guide's RLHF stage 1): a scalar head on the trunk (model.value_head) scores each reply at
its last trained position (the one that predicts its EOS, having read all of it), trained with the Bradley-Terry
loss -log sigmoid(r_chosen - r_rejected) on preference pairs (data.preferences).

Logged per step: stats/reward_accuracy (share of pairs ranked right), stats/reward_margin (mean r_c - r_r).
Held-out metrics: eval_pairwise_accuracy, eval_reward_margin.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llm_jax.objectives.base import Objective, Sown, apply_with_aux
from llm_jax.objectives.pairs import PAIR_FIELDS, PAIR_SHAPES, both, halves


def scores(model, params, batch, rng=None, deterministic: bool = True):
    """(r_chosen, r_rejected) of each pair (B,) each, and the model's `Sown`."""
    values_BL, sown = apply_with_aux(model, params, both(batch, "inputs"), values=True, rng=rng,
                                     deterministic=deterministic)
    return (*halves(last_trained(values_BL, both(batch, "weights"))), sown)


def last_trained(values_BL, weights_BL):
    """(B,) the value at each row's last trained position (the one that predicts the reply's EOS)."""
    L = weights_BL.shape[1]
    last_B = L - 1 - jnp.argmax(weights_BL[:, ::-1] > 0, axis=1)
    return jnp.take_along_axis(values_BL, last_B[:, None], axis=1)[:, 0]


def reward_losses(model, params, batch, rng, deterministic: bool):
    r_c, r_r, sown = scores(model, params, batch, rng, deterministic)
    margin = r_c - r_r
    real = batch["weights"][:, 0]
    n = jnp.maximum(jnp.sum(real), 1.0)
    stats = {"reward_accuracy": jnp.sum((margin > 0) * real) / n, "reward_margin": jnp.sum(margin * real) / n}
    return jax.nn.softplus(-margin)[:, None], batch["weights"], Sown(sown.losses, {**sown.stats, **stats})


def reward_metrics(model, params, batch):
    r_c, r_r, _ = scores(model, params, batch)
    real = batch["weights"][:, 0]
    return {"pairwise_accuracy": (jnp.sum((r_c > r_r) * real), jnp.sum(real)),
            "reward_margin": (jnp.sum((r_c - r_r) * real), jnp.sum(real))}


REWARD = Objective("reward", PAIR_FIELDS, reward_losses, metrics=reward_metrics, shapes=PAIR_SHAPES)
