"""Self-attention: MHA, GQA and MQA are one module, chosen by `n_kv_heads`; causal (decoder) or bidirectional
with a key-padding mask (encoder)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models.config import ModelConfig
from llm_jax.models.layers import dense
from llm_jax.models.positions import apply_rope


def dot_product_attention(q_BLHd, k_BSKd, v_BSKd, segments_BL=None, scale=None, causal: bool = True,
                          padding_BS=None, bias_BHLS=None):
    """softmax(Q K^T / sqrt(d_k) + M) V; each K/V head serves H/K query heads.

    `scale` replaces 1/sqrt(d_k) (muP uses 1/d_k: query-key products grow like d_k once they correlate).

    M hides later positions when `causal` (decoder), nothing otherwise (encoder). With `segments_BL` (document
    ids of packed sequences) it also hides other documents' positions, and with `padding_BS` (True = a real
    token) the padding keys: a real token's output never depends on what padding positions hold. `bias_BHLS` is
    added to the scores before the mask (T5's relative position bias).

    Scores and softmax are float32 whatever the compute dtype; queries are grouped by their K/V head
    rather than repeating K and V, so GQA/MQA save memory as well as parameters.
    """
    B, L, H, hd = q_BLHd.shape
    K = k_BSKd.shape[2]
    q_BLKGd = q_BLHd.reshape(B, L, K, H // K, hd)
    scores_BKGLS = jnp.einsum("blkgd,bskd->bkgls", q_BLKGd, k_BSKd, preferred_element_type=jnp.float32)
    scores_BKGLS = scores_BKGLS * (scale if scale is not None else 1.0 / jnp.sqrt(jnp.float32(hd)))
    if bias_BHLS is not None:
        scores_BKGLS = scores_BKGLS + bias_BHLS.reshape(bias_BHLS.shape[0], K, H // K, *bias_BHLS.shape[2:])
    S = k_BSKd.shape[1]
    mask_BLS = jnp.tril(jnp.ones((L, S), dtype=bool))[None] if causal else jnp.ones((1, L, S), dtype=bool)
    if padding_BS is not None:
        mask_BLS = mask_BLS & padding_BS[:, None, :].astype(bool)
    if segments_BL is not None:
        mask_BLS = mask_BLS & (segments_BL[:, :, None] == segments_BL[:, None, :])
    scores_BKGLS = jnp.where(mask_BLS[:, None, None], scores_BKGLS, jnp.finfo(jnp.float32).min)
    probs_BKGLS = jax.nn.softmax(scores_BKGLS, axis=-1).astype(v_BSKd.dtype)
    out_BLKGd = jnp.einsum("bkgls,bskd->blkgd", probs_BKGLS, v_BSKd)
    return out_BLKGd.reshape(B, L, H, hd)


class Attention(nn.Module):
    """Q, K, V projections, optional RoPE, causal (or, with causal=False, bidirectional) attention, output
    projection. `padding_BL` (True = real token) hides padding keys — of `kv_BSD` when given: cross-attention
    (encoder-decoder), whose keys and values come from the encoder output and get no rotary positions.
    `bias_BHLS` is an additive score bias (T5's relative positions)."""

    cfg: ModelConfig
    causal: bool = True

    @nn.compact
    def __call__(self, x_BLD, positions_BL, segments_BL=None, padding_BL=None, *, kv_BSD=None, bias_BHLS=None):
        cfg = self.cfg
        H, K, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        source_BSD = x_BLD if kv_BSD is None else kv_BSD
        q_BLHd = dense(cfg, (H, hd), 1, ("embed", "heads", "head_dim"), ("heads", "head_dim"), "query")(x_BLD)
        k_BLKd = dense(cfg, (K, hd), 1, ("embed", "kv_heads", "head_dim"), ("kv_heads", "head_dim"), "key")(source_BSD)
        v_BLKd = dense(cfg, (K, hd), 1, ("embed", "kv_heads", "head_dim"), ("kv_heads", "head_dim"), "value")(
            source_BSD)
        if cfg.positions == "rope" and kv_BSD is None:
            q_BLHd = apply_rope(q_BLHd, positions_BL, cfg.rope_theta)
            k_BLKd = apply_rope(k_BLKd, positions_BL, cfg.rope_theta)
        q_BLHd = nn.with_logical_constraint(q_BLHd, ("batch", "length", "heads", "head_dim"))
        out_BLHd = None
        scale = 1.0 / hd if cfg.mup else None
        masked = segments_BL is not None or padding_BL is not None or bias_BHLS is not None
        if not masked and (cfg.attention_impl == "cudnn" or (  # cuDNN flash attention: GPU, 16-bit
                cfg.attention_impl == "auto" and jax.default_backend() == "gpu" and cfg.dtype != "float32")):
            try:
                out_BLHd = jax.nn.dot_product_attention(q_BLHd, k_BLKd, v_BLKd, is_causal=self.causal,
                                                        scale=scale, implementation="cudnn")
            except (ValueError, NotImplementedError, RuntimeError):
                if cfg.attention_impl == "cudnn":  # asked for explicitly: say why it cannot run
                    raise
        if out_BLHd is None:  # the shape/dtype check runs at trace time, so "auto" can fall back here
            out_BLHd = dot_product_attention(q_BLHd, k_BLKd, v_BLKd, segments_BL, scale, self.causal, padding_BL,
                                             bias_BHLS)
        out_BLHd = nn.with_logical_constraint(out_BLHd, ("batch", "length", "heads", "head_dim"))
        out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5
        return dense(cfg, cfg.d_model, 2, ("heads", "head_dim", "embed"), ("embed",), "out", std=out_std)(out_BLHd)
