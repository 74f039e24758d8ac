"""Weight-only quantization formats: how a (in, out) matrix is stored as integer codes and scales, and read back.

Every format works on a matrix `w_IO` whose rows are the inputs of a projection (y = x . W contracts I) and
quantizes along I, so a scale belongs to one output channel (and, for 4-bit, one group of `group` consecutive
inputs):

- **int8**: per output channel absmax. codes int8 in [-127, 127], scale = max|w| / 127 (float32, O):
  w = code * scale. Error at most half a step, scale / 2.
- **int4**: round-to-nearest, group-wise asymmetric (min-max). Per group of `group` inputs and output channel:
  scale = (max - min) / 15, offset = min; codes in [0, 15]: w = code * scale + offset.
- **nf4**: QLoRA's 4-bit NormalFloat (Dettmers et al. 2023). Per group: absmax; codes index the 16 NF4 levels
  (quantiles of a normal distribution, exact 0 and +-1): w = NF4[code] * absmax.

4-bit codes are packed two per byte along I: byte i holds input 2i in its low nibble and input 2i + 1 in its high
nibble, so the packed codes are (I / 2, O) uint8. The parameters a quantized projection stores are `PARTS[method]`
with the shapes `part_shapes` gives. All functions are pure jnp (they accept numpy arrays too) and have no
project imports: the model (llm_jax/models/layers.py) dequantizes with them inside its jitted matmuls.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy.special import ndtri

METHODS = ("int8", "int4", "nf4")
# The stored parts of a quantized kernel, after the codes `q`: int8 and nf4 have one scale, int4 an offset too.
PARTS = {"int8": ("q", "scale"), "int4": ("q", "scale", "offset"), "nf4": ("q", "scale")}
INT4_LEVELS = 15  # codes 0..15
INT8_MAX = 127


def _nf4_levels() -> np.ndarray:
    """The 16 NF4 levels, built as bitsandbytes' `create_normal_map(offset=0.9677083, use_extra_value=True)`
    builds them: 8 positive quantiles of N(0, 1) (probabilities from `offset` down to 1/2), 7 negative, and 0,
    sorted and divided by the largest. tests/quant checks them against the published constants."""
    offset = 0.9677083
    positive = ndtri(np.linspace(offset, 0.5, 9)[:-1])
    negative = -ndtri(np.linspace(offset, 0.5, 8)[:-1])
    levels = np.sort(np.concatenate([positive, [0.0], negative]))
    return (levels / levels.max()).astype(np.float32)


NF4_LEVELS = _nf4_levels()


def part_shapes(method: str, n_in: int, out_shape: tuple[int, ...], group: int) -> dict[str, tuple[tuple, object]]:
    """{part: (shape, dtype)} of a kernel with `n_in` inputs (flattened) and output dimensions `out_shape`."""
    if method == "int8":
        return {"q": ((n_in,) + out_shape, jnp.int8), "scale": (out_shape, jnp.float32)}
    groups = (n_in // group,) + out_shape
    shapes = {"q": ((n_in // 2,) + out_shape, jnp.uint8), "scale": (groups, jnp.float32)}
    if method == "int4":
        shapes["offset"] = (groups, jnp.float32)
    return shapes


# ------------------------------------------------------------------------------------------------ packing


def pack_int4(codes_IO):
    """(I, ...) codes in [0, 15] -> (I / 2, ...) uint8: inputs 2i (low nibble) and 2i + 1 (high nibble)."""
    codes = jnp.asarray(codes_IO, jnp.uint8)
    return codes[0::2] | (codes[1::2] << 4)


def unpack_int4(packed_HO):
    """(I / 2, ...) uint8 -> (I, ...) uint8 codes, the inverse of `pack_int4`."""
    low, high = packed_HO & 0xF, packed_HO >> 4
    return jnp.stack([low, high], axis=1).reshape((-1,) + packed_HO.shape[1:])


def _grouped(w_IO, group: int):
    """(I, O...) -> (I / group, group, O...)."""
    return w_IO.reshape((w_IO.shape[0] // group, group) + w_IO.shape[1:])


# ------------------------------------------------------------------------------------------- group params


def int4_group_params(w_IGO):
    """(scale, offset) of each group of (groups, group, O...) for int4: (max - min) / 15 and min."""
    lo, hi = jnp.min(w_IGO, axis=1), jnp.max(w_IGO, axis=1)
    scale = (hi - lo) / INT4_LEVELS
    return jnp.where(scale > 0, scale, 1.0), lo  # a constant group: any scale reproduces it exactly


def int4_codes(w, scale, offset):
    """Round-to-nearest int4 codes of `w` given its (broadcastable) scale and offset."""
    return jnp.clip(jnp.round((w - offset) / scale), 0, INT4_LEVELS).astype(jnp.uint8)


def nf4_codes(w, absmax):
    """The index of the NF4 level nearest to w / absmax (ties go to the lower level)."""
    x = w / absmax
    midpoints = jnp.asarray((NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2)
    return jnp.sum(x[..., None] > midpoints, axis=-1).astype(jnp.uint8)


# --------------------------------------------------------------------------------- quantize / dequantize


def quantize(method: str, w_IO, group: int = 0) -> dict:
    """The parts (see PARTS) of matrix w_IO (O may be several dimensions) in `method`; `group` (inputs per
    scale) is used by int4 and nf4 and must divide I."""
    w_IO = jnp.asarray(w_IO, jnp.float32)
    if method == "int8":
        absmax = jnp.max(jnp.abs(w_IO), axis=0)
        scale = jnp.where(absmax > 0, absmax / INT8_MAX, 1.0)
        q = jnp.clip(jnp.round(w_IO / scale), -INT8_MAX, INT8_MAX).astype(jnp.int8)
        return {"q": q, "scale": scale}
    w_IGO = _grouped(w_IO, group)
    if method == "int4":
        scale, offset = int4_group_params(w_IGO)
        codes = int4_codes(w_IGO, scale[:, None], offset[:, None])
        return {"q": pack_int4(codes.reshape(w_IO.shape)), "scale": scale, "offset": offset}
    if method == "nf4":
        absmax = jnp.max(jnp.abs(w_IGO), axis=1)
        absmax = jnp.where(absmax > 0, absmax, 1.0)
        codes = nf4_codes(w_IGO, absmax[:, None])
        return {"q": pack_int4(codes.reshape(w_IO.shape)), "scale": absmax}
    raise ValueError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")


def dequantize_halves(method: str, parts: dict, dtype=jnp.float32):
    """A 4-bit matrix as its (even inputs, odd inputs) halves, each (I / 2, O...) in `dtype`: the low and the high
    nibbles, each group's scale covering group / 2 rows of each. x . W = x[0::2] . even + x[1::2] . odd, which
    avoids re-interleaving the rows (on CPU, materializing the interleaved matrix costs ~6x the matmul)."""
    q = parts["q"]
    repeat = q.shape[0] // parts["scale"].shape[0]  # group / 2
    scale = jnp.repeat(parts["scale"], repeat, axis=0)
    if method == "int4":
        offset = jnp.repeat(parts["offset"], repeat, axis=0)
        level = lambda codes: codes.astype(jnp.float32) * scale + offset  # noqa: E731
    elif method == "nf4":
        level = lambda codes: jnp.asarray(NF4_LEVELS)[codes] * scale  # noqa: E731
    else:
        raise ValueError(f"{method!r} is not a 4-bit format")
    return level(q & 0xF).astype(dtype), level(q >> 4).astype(dtype)


def dequantize(method: str, parts: dict, dtype=jnp.float32):
    """The (I, O...) matrix that `parts` stores, in `dtype` (the scales are applied in float32)."""
    if method == "int8":
        return (parts["q"].astype(jnp.float32) * parts["scale"]).astype(dtype)
    if method not in ("int4", "nf4"):
        raise ValueError(f"unknown quantization method {method!r}; choose one of {', '.join(METHODS)}")
    even, odd = dequantize_halves(method, parts, dtype)
    return jnp.stack([even, odd], axis=1).reshape((-1,) + even.shape[1:])
