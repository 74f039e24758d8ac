"""Direct preference optimisation (Rafailov et al. 2023; the guide's DPO) and its variants, on preference pairs.

With pi = log p_policy(reply | prompt) and ref = log p_reference(reply | prompt), summed over the reply's tokens,
h = (pi_c - ref_c) - (pi_r - ref_r), and beta = train.dpo_beta:

| train.dpo_loss | loss per pair                                                       |
|----------------|---------------------------------------------------------------------|
| `sigmoid`      | -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)           |
| `ipo`          | (h - 1 / (2 beta))^2  (Azar et al. 2023)                             |
| `hinge`        | max(0, 1 - beta h)  (SLiC, Zhao et al. 2023)                          |

(eps = train.dpo_label_smoothing: conservative DPO, Mitchell 2023; eps = 0 is DPO.)

The reference log-probabilities are precomputed once, before training, with the reference model (the
checkpoint.restore_from parameters the policy starts from): `reference_logps` fills `chosen_ref_logp` /
`rejected_ref_logp` (B x 1) into the rows, so the step runs one forward pass (chosen and rejected stacked).
Logged per step (stats/) and held out (eval_): rewards_chosen = beta (pi_c - ref_c), rewards_rejected, margin =
beta h, accuracy = share of pairs with h > 0.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.objectives.base import Objective, Sown, apply_with_aux
from llm_jax.objectives.pairs import PAIR_FIELDS, PAIR_SHAPES, sequence_logps

LOSSES = ("sigmoid", "ipo", "hinge")
REF_FIELDS = ("chosen_ref_logp", "rejected_ref_logp")


def _terms(model, params, batch, rng, deterministic: bool, beta: float):
    pi_c, pi_r, sown = sequence_logps(model, params, batch, rng, deterministic, apply_with_aux)
    chosen = pi_c - batch["chosen_ref_logp"][:, 0]
    rejected = pi_r - batch["rejected_ref_logp"][:, 0]
    return chosen, rejected, chosen - rejected, sown


def _statistics(batch, chosen, rejected, h, beta: float) -> dict:
    """{name: (sum, count)} over the real pairs."""
    real = batch["weights"][:, 0]
    n = jnp.sum(real)
    return {"rewards_chosen": (jnp.sum(beta * chosen * real), n),
            "rewards_rejected": (jnp.sum(beta * rejected * real), n), "margin": (jnp.sum(beta * h * real), n),
            "accuracy": (jnp.sum((h > 0) * real), n)}


def dpo_losses(model, params, batch, rng, deterministic: bool, *, beta: float, loss: str, smoothing: float):
    chosen, rejected, h, sown = _terms(model, params, batch, rng, deterministic, beta)
    if loss == "sigmoid":
        per_pair = (1 - smoothing) * jax.nn.softplus(-beta * h) + smoothing * jax.nn.softplus(beta * h)
    elif loss == "ipo":
        per_pair = jnp.square(h - 1 / (2 * beta))
    else:
        per_pair = jax.nn.relu(1 - beta * h)
    stats = {k: s / jnp.maximum(c, 1.0) for k, (s, c) in _statistics(batch, chosen, rejected, h, beta).items()}
    return per_pair[:, None], batch["weights"], Sown(sown.losses, {**sown.stats, **stats})


def dpo_metrics(model, params, batch, *, beta: float, **_):
    chosen, rejected, h, _ = _terms(model, params, batch, None, True, beta)
    return _statistics(batch, chosen, rejected, h, beta)


def configured(train_cfg) -> Objective:
    kw = dict(beta=train_cfg.dpo_beta, loss=train_cfg.dpo_loss, smoothing=train_cfg.dpo_label_smoothing)
    return dataclasses.replace(DPO, losses=functools.partial(dpo_losses, **kw),
                               metrics=functools.partial(dpo_metrics, **kw))


def reference_logps(model, params, rows, batch_size: int = 16) -> dict[str, np.ndarray]:
    """{chosen_ref_logp, rejected_ref_logp}: (N,) float32 log-probabilities of every row's replies under `params`
    (the reference), in batches of `batch_size` rows."""
    step = jax.jit(lambda p, b: sequence_logps(model, p, b, None, True, apply_with_aux)[:2])
    out = {k: [] for k in REF_FIELDS}
    for start in range(0, len(rows), batch_size):
        items = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
        items += [items[-1]] * (batch_size - len(items))  # one compiled shape; the copies are dropped below
        batch = {k: np.stack([r[k] for r in items]) for k in items[0] if not k.endswith("ref_logp")}
        chosen, rejected = jax.device_get(step(params, batch))
        n = min(batch_size, len(rows) - start)
        out["chosen_ref_logp"].append(chosen[:n])
        out["rejected_ref_logp"].append(rejected[:n])
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}


DPO = Objective("dpo", PAIR_FIELDS + REF_FIELDS,
                functools.partial(dpo_losses, beta=0.1, loss="sigmoid", smoothing=0.0),
                metrics=functools.partial(dpo_metrics, beta=0.1), configure=configured,
                shapes=PAIR_SHAPES + tuple((name, ("B", 1), "float32") for name in REF_FIELDS))
