"""Parameter-efficient fine-tuning (`model.peft`): which parameters each method adds, and the pieces it adds.

- `lora` (`lora.py`): `lora_a`, `lora_b` beside each targeted projection; step 0 is the base model (B = 0).
- `prefix` (`attention.py`): `prefix_key`, `prefix_value`, model.prefix_len trainable keys and values that every
  query also attends to; step 0 is not the base (the prefix takes attention mass).
- `adapter` (here): `adapter_attn`, `adapter_ffn`, x + W_up(ReLU(W_down x)) on the attention and FFN sublayer
  outputs (Houlsby et al.); step 0 is the base model (W_up = 0).

Only these parameters train (`trainable_pattern`: the train step's mask, so the base has no gradient and no
optimizer state). `split` / `join` separate them from the base (restoring a base checkpoint into a PEFT model,
saving or exporting the adapters alone).
"""

from __future__ import annotations

import flax.linen as nn
import jax

KEYS = {"lora": ("lora_a", "lora_b"), "prefix": ("prefix_key", "prefix_value"),
        "adapter": ("adapter_attn", "adapter_ffn")}
ALL_KEYS = frozenset(k for keys in KEYS.values() for k in keys)


def trainable_pattern(method: str) -> str:
    """The parameter-path regex (fullmatch) of what trains under the method: its parameters, and a value head if
    the model has one (a reward model's score head is new, like the adapters: PEFT's `modules_to_save`)."""
    return rf"(.*/)?({'|'.join(KEYS[method])}|value_head)(/.*)?"


def split(params: dict) -> tuple[dict, dict]:
    """(base parameters, PEFT parameters): the same nesting, each PEFT leaf or subtree in the second tree only."""
    base, added = {}, {}
    for k, v in params.items():
        if k in ALL_KEYS:
            added[k] = v
        elif isinstance(v, dict):
            b, a = split(v)
            base[k] = b
            if a:
                added[k] = a
        else:
            base[k] = v
    return base, added


def join(base: dict, added: dict) -> dict:
    """`split`'s inverse."""
    out = dict(base)
    for k, v in added.items():
        out[k] = join(out.get(k, {}), v) if isinstance(v, dict) and k not in ALL_KEYS else v
    return out


class BottleneckAdapter(nn.Module):
    """x + W_up(ReLU(W_down x)) (Houlsby et al. 2019): model.adapter_dim hidden units; W_up starts at zero, so the
    adapter starts as the identity."""

    cfg: object

    @nn.compact
    def __call__(self, x_BLD):
        cfg = self.cfg
        w_down = self.param("down", nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std),
                                                                 ("embed", None)), (cfg.d_model, cfg.adapter_dim),
                            cfg.weight_dtype)
        w_up = self.param("up", nn.with_logical_partitioning(nn.initializers.zeros, (None, "embed")),
                          (cfg.adapter_dim, cfg.d_model), cfg.weight_dtype)
        h = jax.nn.relu(x_BLD.astype(cfg.compute_dtype) @ w_down.astype(cfg.compute_dtype))
        return x_BLD + (h @ w_up.astype(cfg.compute_dtype)).astype(x_BLD.dtype)
