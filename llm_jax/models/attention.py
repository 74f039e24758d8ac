"""Causal self-attention: MHA, GQA and MQA are one module, chosen by `n_kv_heads`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models.config import ModelConfig
from llm_jax.models.layers import dense
from llm_jax.models.positions import apply_rope


def causal_attention(q_BLHd, k_BSKd, v_BSKd, segments_BL=None, scale=None):
    """softmax(Q K^T / sqrt(d_k) + M) V with the causal mask M; each K/V head serves H/K query heads.

    `scale` replaces 1/sqrt(d_k) (muP uses 1/d_k: query-key products grow like d_k once they correlate).

    With `segments_BL` (document ids of packed sequences) M also hides other documents' positions.

    Scores and softmax are float32 whatever the compute dtype; queries are grouped by their K/V head
    rather than repeating K and V, so GQA/MQA save memory as well as parameters.
    """
    B, L, H, hd = q_BLHd.shape
    K = k_BSKd.shape[2]
    q_BLKGd = q_BLHd.reshape(B, L, K, H // K, hd)
    scores_BKGLS = jnp.einsum("blkgd,bskd->bkgls", q_BLKGd, k_BSKd, preferred_element_type=jnp.float32)
    scores_BKGLS = scores_BKGLS * (scale if scale is not None else 1.0 / jnp.sqrt(jnp.float32(hd)))
    mask_BLS = jnp.tril(jnp.ones((L, k_BSKd.shape[1]), dtype=bool))[None]
    if segments_BL is not None:
        mask_BLS = mask_BLS & (segments_BL[:, :, None] == segments_BL[:, None, :])
    scores_BKGLS = jnp.where(mask_BLS[:, None, None], scores_BKGLS, jnp.finfo(jnp.float32).min)
    probs_BKGLS = jax.nn.softmax(scores_BKGLS, axis=-1).astype(v_BSKd.dtype)
    out_BLKGd = jnp.einsum("bkgls,bskd->blkgd", probs_BKGLS, v_BSKd)
    return out_BLKGd.reshape(B, L, H, hd)


class Attention(nn.Module):
    """Q, K, V projections, optional RoPE, causal attention, output projection."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BLD, positions_BL, segments_BL=None):
        cfg = self.cfg
        H, K, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        q_BLHd = dense(cfg, (H, hd), 1, ("embed", "heads", "head_dim"), ("heads", "head_dim"), "query")(x_BLD)
        k_BLKd = dense(cfg, (K, hd), 1, ("embed", "kv_heads", "head_dim"), ("kv_heads", "head_dim"), "key")(x_BLD)
        v_BLKd = dense(cfg, (K, hd), 1, ("embed", "kv_heads", "head_dim"), ("kv_heads", "head_dim"), "value")(x_BLD)
        if cfg.positions == "rope":
            q_BLHd = apply_rope(q_BLHd, positions_BL, cfg.rope_theta)
            k_BLKd = apply_rope(k_BLKd, positions_BL, cfg.rope_theta)
        q_BLHd = nn.with_logical_constraint(q_BLHd, ("batch", "length", "heads", "head_dim"))
        out_BLHd = None
        scale = 1.0 / hd if cfg.mup else None
        if segments_BL is None and (cfg.attention_impl == "cudnn" or (  # cuDNN flash attention: GPU, 16-bit
                cfg.attention_impl == "auto" and jax.default_backend() == "gpu" and cfg.dtype != "float32")):
            try:
                out_BLHd = jax.nn.dot_product_attention(q_BLHd, k_BLKd, v_BLKd, is_causal=True,
                                                        scale=scale, implementation="cudnn")
            except (ValueError, NotImplementedError, RuntimeError):
                if cfg.attention_impl == "cudnn":  # asked for explicitly: say why it cannot run
                    raise
        if out_BLHd is None:  # the shape/dtype check runs at trace time, so "auto" can fall back here
            out_BLHd = causal_attention(q_BLHd, k_BLKd, v_BLKd, segments_BL, scale)
        out_BLHd = nn.with_logical_constraint(out_BLHd, ("batch", "length", "heads", "head_dim"))
        out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5
        return dense(cfg, cfg.d_model, 2, ("heads", "head_dim", "embed"), ("embed",), "out", std=out_std)(out_BLHd)
