"""What an objective is: a loss over a batch, per target position, plus the batch fields it needs.

`losses(model, params, batch, rng, deterministic)` returns (losses_BL, weights_BL, sown): per-position losses
(float32), their weights (0 where a position does not count) and a `Sown`: the auxiliary scalar losses that
modules sowed into the `losses` collection (already weighted, e.g. an MoE balancing loss) and the statistics they
sowed into `stats` (e.g. the dropped-token fraction). The train step minimises the weighted mean of `losses_BL`
plus the sum of `sown.losses`, and logs every entry of both (`aux/<name>`, `stats/<name>`).

Two optional hooks: `prepare(model, batch, rng)` rewrites the batch on device once per step, before it is split
into micro-batches (MLM masks tokens there, so the loss is normalised by the masked count of the whole batch);
`rng` is None in evaluation, which must be deterministic. `metrics(model, params, batch)` returns
{name: (sum, count)} of extra held-out metrics (MLM accuracy); evaluation reports each as sum / count.
`configure(train_cfg)` returns the objective with the run's settings (`get_objective(name, cfg.train)`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

AUX_COLLECTION = "losses"
STATS_COLLECTION = "stats"


class Sown(NamedTuple):
    losses: dict  # {name: weighted scalar}: added to the objective's loss
    stats: dict   # {name: scalar}: logged only


NOTHING_SOWN = Sown({}, {})


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    batch_fields: tuple[str, ...]
    losses: Callable  # (model, params, batch, rng, deterministic) -> (losses_BL, weights_BL, aux)
    prepare: Callable | None = None  # (model, batch, rng or None) -> batch, once per step before micro-batching
    metrics: Callable | None = None  # (model, params, prepared batch) -> {name: (sum, count)}, in evaluation
    configure: Callable | None = None  # (train config) -> this objective with the run's settings (DPO's beta)
    shapes: tuple = ()  # ((field, dims, dtype), ...) of the batch fields that are not (B, L) int32 (field_specs)


def field_specs(objective: Objective, cfg) -> dict[str, tuple[tuple[int, ...], str]]:
    """{field: (global shape, dtype)} of every batch field of `objective` under `cfg`: (B, L) int32 unless the
    objective's `shapes` says otherwise, with dims B (train.batch_size), L (model.seq_len), T (data.target_len, 0 =
    L), K (train.distill_top_k), S (model.image_size) or numbers. What `llm-jax compile` lowers the step for, and
    what every batch fed to the step is checked against (Trainable.to_device)."""
    size = {"B": cfg.train.batch_size, "L": cfg.model.seq_len, "T": cfg.data.target_len or cfg.model.seq_len,
            "K": cfg.train.distill_top_k, "S": cfg.model.image_size}
    given = {name: (dims, dtype) for name, dims, dtype in objective.shapes}
    unknown = set(given) - set(objective.batch_fields)
    assert not unknown, f"{objective.name}: shapes of fields it does not read: {sorted(unknown)}"
    out = {}
    for name in objective.batch_fields:
        dims, dtype = given.get(name, (("B", "L"), "int32"))
        out[name] = (tuple(size[d] if isinstance(d, str) else d for d in dims), dtype)
    return out


def sown_losses(collection) -> dict:
    """{name: scalar} from a `losses` collection: what a scanned stack sowed per layer is summed over layers."""
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(collection)[0]:
        names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        name = names[-2] if names and names[-1].isdigit() else names[-1]  # sow keeps a tuple per call
        out[name] = out.get(name, 0.0) + jnp.sum(value).astype(jnp.float32)
    return out


def sown_stats(collection) -> dict:
    """{name: scalar} from a `stats` collection: over layers, `*_min` takes the min, `*_max` the max, else the mean."""
    out = {}
    for path, value in jax.tree_util.tree_flatten_with_path(collection)[0]:
        names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        name = names[-2] if names and names[-1].isdigit() else names[-1]
        out.setdefault(name, []).append(value.astype(jnp.float32).reshape(-1))
    reduce = lambda name: jnp.min if name.endswith("_min") else jnp.max if name.endswith("_max") else jnp.mean  # noqa: E731
    return {name: reduce(name)(jnp.concatenate(values)) for name, values in out.items()}


def weighted_correct(logits_BLV, targets_BL, weights_BL):
    """(B, L) float32: the weight where the top prediction is the target, else 0 (teacher-forced accuracy)."""
    return (jnp.argmax(logits_BLV, axis=-1) == targets_BL).astype(jnp.float32) * weights_BL


def token_accuracy(logits_BLV, targets_BL, weights_BL) -> tuple:
    """The `token_accuracy` metric's (numerator, denominator) over the weighted tokens."""
    return jnp.sum(weighted_correct(logits_BLV, targets_BL, weights_BL)), jnp.sum(weights_BL)


def apply_with_aux(model, params, *args, rng=None, deterministic: bool = True, **kwargs):
    """(model output, `Sown`) of `model.apply`, with dropout noise from `rng` when not deterministic."""
    out, sown = model.apply({"params": params}, *args, deterministic=deterministic,
                            mutable=[AUX_COLLECTION, STATS_COLLECTION],
                            rngs=None if deterministic else {"dropout": rng}, **kwargs)
    return out, Sown(sown_losses(sown.get(AUX_COLLECTION, {})), sown_stats(sown.get(STATS_COLLECTION, {})))
