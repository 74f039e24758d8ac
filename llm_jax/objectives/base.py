"""What an objective is: a loss over a batch, per target position, plus the batch fields it needs.

`losses(model, params, batch, rng, deterministic)` returns (losses_BL, weights_BL, aux): per-position losses
(float32), their weights (0 where a position does not count) and a dict of auxiliary scalar losses that modules
sowed into the `losses` collection (already weighted, e.g. an MoE balancing loss); the train step minimises the
weighted mean of `losses_BL` plus the sum of `aux`, and logs each `aux` entry.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

AUX_COLLECTION = "losses"


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    batch_fields: tuple[str, ...]
    losses: Callable  # (model, params, batch, rng, deterministic) -> (losses_BL, weights_BL, aux)


def sown_losses(collection) -> dict:
    """{name: scalar} from a `losses` collection: what a scanned stack sowed per layer is summed over layers."""
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(collection)[0]:
        names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        name = names[-2] if names and names[-1].isdigit() else names[-1]  # sow keeps a tuple per call
        out[name] = out.get(name, 0.0) + jnp.sum(value).astype(jnp.float32)
    return out


def apply_with_aux(model, params, *args, rng=None, deterministic: bool = True, **kwargs):
    """(model output, aux losses) of `model.apply`, with dropout noise from `rng` when not deterministic."""
    out, sown = model.apply({"params": params}, *args, deterministic=deterministic, mutable=[AUX_COLLECTION],
                            rngs=None if deterministic else {"dropout": rng}, **kwargs)
    return out, sown_losses(sown.get(AUX_COLLECTION, {}))
