"""AdamW with a weight-decay mask, global-norm clipping, and the guide's learning-rate schedules."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax

from llm_jax.errors import UserError

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
        return _names(path)[-1] not in NO_DECAY
    return jax.tree_util.tree_map_with_path(keep, params)


def param_path(path) -> str:
    """'layers/attention/query/kernel': the path `train.trainable` is matched against."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def trainable_mask(params, pattern: str, also: str | None = None):
    """A tree of bools: True where the parameter's path fully matches `pattern` (and `also`: model.peft's adapter
    pattern); None when everything trains, so that the common case builds exactly the all-trainable step and
    optimizer state."""
    regexes = [re.compile(p) for p in (pattern, also) if p is not None]
    mask = jax.tree_util.tree_map_with_path(  # pruning masks (model.prune_masks) are never trained
        lambda p, _: all(r.fullmatch(param_path(p)) for r in regexes) and not param_path(p).endswith("kernel_mask"),
        params)
    if all(jax.tree.leaves(mask)):
        return None
    if not any(jax.tree.leaves(mask)):
        raise UserError(f"train.trainable={pattern!r}{' with the adapters of model.peft' if also else ''} matches no "
                        f"parameter; paths look like "
                        f"{param_path(jax.tree_util.tree_flatten_with_path(params)[0][0][0])!r}")
    return mask


def _names(path) -> list[str]:
    return [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]


def mup_lr_multipliers(params, width_mult: float):
    """muP with Adam: hidden (width x width) kernels — every kernel inside the layer stack — learn at
    lr / width_mult; embeddings, the readout, norms and biases keep the base learning rate."""
    def factor(path, _):
        names = _names(path)
        return 1.0 / width_mult if "layers" in names and names[-1] == "kernel" else 1.0
    return jax.tree_util.tree_map_with_path(factor, params)


def scale_by_tree(multipliers_fn) -> optax.GradientTransformation:
    """Multiplies each update by its parameter's factor; `multipliers_fn(tree)` names the factors by path, so
    it is traced once into the step (the factors are constants there)."""
    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None):
        factors = multipliers_fn(updates)
        return jax.tree_util.tree_map(lambda u, f: u * jnp.asarray(f, u.dtype), updates, factors), state

    return optax.GradientTransformation(init, update)


def make_optimizer(t_cfg, m_cfg=None) -> optax.GradientTransformation:
    """AdamW after global-norm clipping; with `m_cfg.mup`, muP's per-layer learning rates on top.

    The clipping stage is always there (`grad_clip=0` clips at infinity, which leaves every update as it is), so
    the optimizer state has the same structure whatever the clipping setting and a run can change it on resume.
    """
    parts = [optax.clip_by_global_norm(t_cfg.grad_clip if t_cfg.grad_clip > 0 else float("inf"))]
    parts.append(optax.adamw(schedule(t_cfg), b1=t_cfg.b1, b2=t_cfg.b2, eps=t_cfg.eps,
                             weight_decay=t_cfg.weight_decay, mask=decay_mask))
    if m_cfg is not None and m_cfg.mup:
        width_mult = m_cfg.d_model / m_cfg.mup_base_width
        parts.append(scale_by_tree(lambda tree: mup_lr_multipliers(tree, width_mult)))
    return optax.chain(*parts)
