"""Position information: learned tables, sinusoids, and rotary embeddings (RoPE)."""

from __future__ import annotations

import jax.numpy as jnp


def sinusoidal_table(positions_L: jnp.ndarray, d_model: int) -> jnp.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...), interleaved as in the guide."""
    i = jnp.arange(d_model // 2, dtype=jnp.float32)
    inv_freq = 1.0 / (10000.0 ** (2.0 * i / d_model))
    angles_LI = positions_L.astype(jnp.float32)[:, None] * inv_freq[None, :]
    table = jnp.stack([jnp.sin(angles_LI), jnp.cos(angles_LI)], axis=-1)  # (L, d/2, 2): sin, cos pairs
    return table.reshape(positions_L.shape[0], d_model)


def rope_frequencies(head_dim: int, theta: float) -> jnp.ndarray:
    """theta_i = base^(-2i/d) for i < d/2."""
    return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def apply_rope(x_BLHK: jnp.ndarray, positions_BL: jnp.ndarray, inv_freq_K2: jnp.ndarray,
               attention_factor: float = 1.0) -> jnp.ndarray:
    """Rotates pairs of each head's features by position * theta_i (`inv_freq_K2`: `rope_frequencies`, or a
    scaled variant from `rope_scaling.py`); `attention_factor` scales cos and sin (YaRN's temperature).

    Pairs are (k, k + head_dim/2) — the "rotate half" layout of GPT-NeoX and Hugging Face Llama — rather than
    the guide's adjacent pairs (2i, 2i+1). The two are the same rotation up to a fixed permutation of the
    head features, and this layout loads Hugging Face checkpoints without permuting weights.
    """
    head_dim = x_BLHK.shape[-1]
    angles_BLK2 = positions_BL.astype(jnp.float32)[..., None] * inv_freq_K2
    sin = (jnp.sin(angles_BLK2) * attention_factor)[:, :, None, :]
    cos = (jnp.cos(angles_BLK2) * attention_factor)[:, :, None, :]
    x = x_BLHK.astype(jnp.float32)
    x1, x2 = x[..., : head_dim // 2], x[..., head_dim // 2:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x_BLHK.dtype)


def relative_position_bucket(relative_LS: jnp.ndarray, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jnp.ndarray:
    """T5's bucket of each key-minus-query offset (Raffel et al. 2020): half the buckets for each direction
    when bidirectional (else only the past counts, the future shares bucket 0); within a direction, offsets below
    half its buckets get one bucket each, larger ones share logarithmically spaced buckets up to `max_distance`,
    beyond which everything falls in the last."""
    buckets = jnp.zeros_like(relative_LS)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_LS > 0).astype(relative_LS.dtype) * num_buckets
        distance = jnp.abs(relative_LS)
    else:
        distance = -jnp.minimum(relative_LS, 0)
    exact = num_buckets // 2
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact) / jnp.log(max_distance / exact)
    large = exact + (log_ratio * (num_buckets - exact)).astype(relative_LS.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(distance < exact, distance, large)
