"""AdamW with a weight-decay mask, global-norm clipping, and the guide's learning-rate schedules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

NO_DECAY = ("scale", "bias")  # norm gains and biases are not decayed


def schedule(t_cfg) -> optax.Schedule:
    """lr(step) for train.schedule in cosine | inverse_sqrt | wsd | constant, all with linear warmup."""
    peak, floor, warmup, total = t_cfg.lr, t_cfg.lr_min, t_cfg.warmup_steps, t_cfg.steps
    kind = t_cfg.schedule

    def lr(step):
        step = jnp.asarray(step, jnp.float32)
        warm = peak * (step + 1) / max(warmup, 1)  # reaches the peak on the last warmup step
        if kind == "constant":
            after = jnp.asarray(peak, jnp.float32)
        elif kind == "cosine":  # lr_min + (lr_max - lr_min)/2 * (1 + cos(pi t'/T'))
            frac = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
            after = floor + 0.5 * (peak - floor) * (1.0 + jnp.cos(jnp.pi * frac))
        elif kind == "inverse_sqrt":  # min(t^-0.5, t * w^-1.5) is its own warmup; scaled to peak at t = w
            t = step + 1
            return peak * jnp.sqrt(warmup) * jnp.minimum(t ** -0.5, t * warmup ** -1.5)
        elif kind == "wsd":  # warmup, stable at the peak, then a linear decay to lr_min over the last fraction
            decay_steps = max(int(round(total * t_cfg.wsd_decay_fraction)), 1)
            frac = jnp.clip((step - (total - decay_steps)) / decay_steps, 0.0, 1.0)
            after = peak + (floor - peak) * frac
        else:
            raise ValueError(f"unknown schedule {kind!r}")
        return jnp.where(step < warmup, warm, after)

    return lr


def decay_mask(params):
    """True where weight decay applies: every weight but norm scales and biases."""
    def keep(path, _):
        # The last dict key names the parameter (a logical-partitioning box adds a `.value` attribute after it).
        names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
        return names[-1] not in NO_DECAY
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(t_cfg) -> optax.GradientTransformation:
    parts = []
    if t_cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(t_cfg.grad_clip))
    parts.append(optax.adamw(schedule(t_cfg), b1=t_cfg.b1, b2=t_cfg.b2, eps=t_cfg.eps,
                             weight_decay=t_cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts)
