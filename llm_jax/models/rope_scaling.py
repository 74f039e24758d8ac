"""RoPE scaling for context extension (`model.rope_scaling`): the rotary frequencies a model uses beyond the
context it was trained at, and an attention temperature. One function per variant behind a registry; each returns
(inverse frequencies (head_dim/2,), attention factor) and matches the Hugging Face rope type of the same name
(tests compare logits with transformers).

With factor s, original context L0 (`model.rope_original_len`), base b and d = head_dim:
- linear (position interpolation, Chen et al. 2023): theta_i / s — positions squeezed into the trained range.
- ntk (NTK-aware, static): base b * s^(d/(d-2)) — low frequencies interpolated, high ones nearly untouched.
- dynamic (dynamic NTK): the ntk base with s replaced by (s * L/L0 - (s - 1)) where L = max(longest position + 1,
  L0) of the batch: no change up to L0, growing beyond it.
- yarn (Peng et al. 2023): per frequency, interpolate (theta_i / s) where a wavelength spans more than L0 /
  beta_slow turns, keep theta_i where it turns more than beta_fast times over L0, a linear ramp between; cos and
  sin scaled by the temperature 0.1 ln s + 1 (or `model.rope_attention_factor`).
- llama3 (Llama 3.1): wavelengths above L0 / low_freq_factor divided by s, below L0 / high_freq_factor kept, a
  smooth blend between.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from llm_jax.models.positions import rope_frequencies


def _plain(cfg, head_dim, max_position):
    return rope_frequencies(head_dim, cfg.rope_theta), 1.0


def _linear(cfg, head_dim, max_position):
    return rope_frequencies(head_dim, cfg.rope_theta) / cfg.rope_factor, 1.0


def _ntk(cfg, head_dim, max_position):
    base = cfg.rope_theta * cfg.rope_factor ** (head_dim / (head_dim - 2))
    return rope_frequencies(head_dim, base), 1.0


def _dynamic(cfg, head_dim, max_position):
    length = jnp.maximum(max_position + 1, cfg.rope_original_len).astype(jnp.float32)
    stretch = cfg.rope_factor * length / cfg.rope_original_len - (cfg.rope_factor - 1)
    base = cfg.rope_theta * stretch ** (head_dim / (head_dim - 2))
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    return 1.0 / base ** exponents, 1.0


def yarn_attention_factor(cfg) -> float:
    if cfg.rope_attention_factor:
        return cfg.rope_attention_factor
    return 0.1 * math.log(cfg.rope_factor) + 1.0 if cfg.rope_factor > 1 else 1.0


def _yarn(cfg, head_dim, max_position):
    base, factor = cfg.rope_theta, cfg.rope_factor

    def turns_to_dim(turns):  # the dimension index whose wavelength fits `turns` times into L0
        return head_dim * math.log(cfg.rope_original_len / (turns * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(turns_to_dim(cfg.rope_yarn_beta_fast)), 0)
    high = min(math.ceil(turns_to_dim(cfg.rope_yarn_beta_slow)), head_dim - 1)
    high = high + 0.001 if low == high else high
    ramp = jnp.clip((jnp.arange(head_dim // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp  # 1 where the frequency is kept (extrapolated), 0 where it is interpolated
    inv_freq = rope_frequencies(head_dim, base)
    return inv_freq / factor * (1 - keep) + inv_freq * keep, yarn_attention_factor(cfg)


def _llama3(cfg, head_dim, max_position):
    inv_freq = rope_frequencies(head_dim, cfg.rope_theta)
    factor, low, high, L0 = cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor, cfg.rope_original_len
    wavelength = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelength > L0 / low, inv_freq / factor, inv_freq)
    smooth = (L0 / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= L0 / high) & (wavelength <= L0 / low)
    return jnp.where(medium, blended, scaled), 1.0


ROPE_SCALINGS = {"none": _plain, "linear": _linear, "ntk": _ntk, "dynamic": _dynamic, "yarn": _yarn,
                 "llama3": _llama3}
NEEDS_ORIGINAL_LEN = ("dynamic", "yarn", "llama3")


def rope_parameters(cfg, positions_BL):
    """(inverse frequencies (head_dim/2,), attention factor) of `cfg.rope_scaling` for these positions (only
    `dynamic` looks at them: the longest position of the batch)."""
    max_position = jnp.max(positions_BL) if cfg.rope_scaling == "dynamic" else None
    return ROPE_SCALINGS[cfg.rope_scaling](cfg, cfg.head_dim, max_position)
