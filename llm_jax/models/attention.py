"""Causal self-attention: MHA, GQA and MQA are one module, chosen by `n_kv_heads`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models.config import ModelConfig
from llm_jax.models.layers import dense
from llm_jax.models.positions import apply_rope


class Attention(nn.Module):
    """softmax(Q K^T / sqrt(d_k) + causal mask) V, with K/V shared by groups of n_heads / n_kv_heads heads."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BLD, positions_BL):
        cfg = self.cfg
        H, K, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        q_BLHd = dense(cfg, (H, hd), 1, ("embed", "heads", "head_dim"), ("heads", "head_dim"), "query")(x_BLD)
        k_BLKd = dense(cfg, (K, hd), 1, ("embed", "kv_heads", "head_dim"), ("kv_heads", "head_dim"), "key")(x_BLD)
        v_BLKd = dense(cfg, (K, hd), 1, ("embed", "kv_heads", "head_dim"), ("kv_heads", "head_dim"), "value")(x_BLD)
        if cfg.positions == "rope":
            q_BLHd = apply_rope(q_BLHd, positions_BL, cfg.rope_theta)
            k_BLKd = apply_rope(k_BLKd, positions_BL, cfg.rope_theta)
        q_BLHd = nn.with_logical_constraint(q_BLHd, ("batch", "length", "heads", "head_dim"))
        impl = cfg.attention_impl
        if impl == "auto":  # cuDNN flash attention needs a GPU and a 16-bit compute dtype
            impl = "cudnn" if jax.default_backend() == "gpu" and cfg.dtype != "float32" else "xla"
        out_BLHd = jax.nn.dot_product_attention(q_BLHd, k_BLKd, v_BLKd, is_causal=True, implementation=impl)
        out_BLHd = nn.with_logical_constraint(out_BLHd, ("batch", "length", "heads", "head_dim"))
        out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5
        return dense(cfg, cfg.d_model, 2, ("heads", "head_dim", "embed"), ("embed",), "out", std=out_std)(
            out_BLHd)
