"""LoRA (Hu et al. 2021): a low-rank update beside a frozen projection, y = x W + (alpha / r) * dropout(x) A B.

With model.peft="lora", every `Dense` whose module path ("layers/attention/query") matches model.lora_targets
(a regex, searched) gets `lora_a` (inputs x r, N(0, (1/r)^2): `a_std`) and `lora_b` (r x outputs, zeros), so at
step 0 the model computes exactly the base model. The inputs of a projection that contracts several axes (the
attention output: heads x head_dim) are flattened for A. Training then updates the adapters only (the base gets
no gradient and no optimizer state: `peft.trainable_pattern`).

`merge` folds the adapters into the kernels (W + (alpha / r) A B) and drops them: a plain model of the same
config with peft="none"; `unmerge` takes them out again (`peft.split` / `peft.join` separate adapters and base).
"""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models.peft import join

ADAPTER_NAMES = ("lora_a", "lora_b")


def a_std(rank: int) -> float:
    """A's init std: 1 / r (PEFT's `init_lora_weights="gaussian"`); B starts at zero either way."""
    return 1.0 / rank


def scale(cfg) -> float:
    return cfg.lora_alpha / cfg.lora_rank


def targeted(cfg, path: tuple[str, ...]) -> bool:
    """Does the projection at module `path` get an adapter?"""
    return cfg.peft == "lora" and re.search(cfg.lora_targets, "/".join(path)) is not None


def delta(module: nn.Module, x, n_in: int, features: tuple[int, ...], kernel_names):
    """(alpha / r) * dropout(x) A B for `module` (a Dense, inside whose compact call this runs). Dropout applies
    when the call has a `dropout` rng, i.e. in the training step (evaluation and decoding pass none)."""
    cfg = module.cfg
    in_shape = x.shape[x.ndim - n_in:]
    x_BI = x.reshape(x.shape[:x.ndim - n_in] + (math.prod(in_shape),)).astype(cfg.compute_dtype)
    first_in, outs = kernel_names[0], tuple(kernel_names[n_in:])
    a = module.param("lora_a", nn.with_logical_partitioning(nn.initializers.normal(a_std(cfg.lora_rank)),
                                                            (first_in, None)),
                     (x_BI.shape[-1], cfg.lora_rank), cfg.weight_dtype)
    b = module.param("lora_b", nn.with_logical_partitioning(nn.initializers.zeros, (None,) + outs),
                     (cfg.lora_rank,) + tuple(features), cfg.weight_dtype)
    if cfg.lora_dropout and module.has_rng("dropout"):
        x_BI = nn.Dropout(cfg.lora_dropout, deterministic=False)(x_BI)
    h_BR = jnp.dot(x_BI, a.astype(cfg.compute_dtype))
    y = jax.lax.dot_general(h_BR, b.astype(cfg.compute_dtype), (((h_BR.ndim - 1,), (0,)), ((), ())))
    return y * jnp.asarray(scale(cfg), cfg.compute_dtype)


def _walk(tree, fn, path=()):
    """fn(path, node) on every dict holding a `kernel` (a projection), rebuilding the tree from its results."""
    if not isinstance(tree, dict):
        return tree
    if "kernel" in tree:
        return fn(path, tree)
    return {k: _walk(v, fn, path + (k,)) for k, v in tree.items()}


def _product(a, b, kernel_shape, stacked: int):
    """A B reshaped like the kernel; `stacked` leading axes (scanned layers) are kept."""
    ab = jnp.einsum("...ir,...ro->...io", a.astype(jnp.float32),
                    b.astype(jnp.float32).reshape(b.shape[:stacked + 1] + (-1,)))
    return ab.reshape(kernel_shape)


def merge(params: dict, cfg, sign: float = 1.0) -> dict:
    """The parameters with every adapter folded into its kernel (W + sign * (alpha / r) A B) and removed."""
    def fold(path, node):
        if "lora_a" not in node:
            return node
        a, b, kernel = node["lora_a"], node["lora_b"], node["kernel"]
        stacked = a.ndim - 2
        new = kernel.astype(jnp.float32) + sign * scale(cfg) * _product(a, b, kernel.shape, stacked)
        return {k: v for k, v in node.items() if k not in ADAPTER_NAMES} | {"kernel": new.astype(kernel.dtype)}
    return _walk(params, fold)


def unmerge(merged: dict, adapters: dict, cfg) -> dict:
    """The inverse of `merge` given the adapters (`split`'s second part): W - (alpha / r) A B, adapters back."""
    return join(merge(join(merged, adapters), cfg, sign=-1.0), adapters)
