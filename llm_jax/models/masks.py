"""Which keys a query may attend to: one definition for every attention implementation.

A mask is a static `MaskSpec` (the pattern: causal or bidirectional, sliding window, strided, global tokens) plus
the dynamic per-example arrays of `MaskArrays` (document ids of packed sequences, key padding, prefix lengths).
`visible` evaluates it on any (query positions x key positions) tile, so the `xla` path calls it once on the
whole L x S grid and the blockwise path on each (query block, key block) tile; `key_block_range` and
`query_block_range` bound the tiles that can hold a visible pair, which is what lets the blockwise path skip
the rest (a sliding window's cost then grows linearly with length).

Conventions (distance d = q - k for causal attention, |q - k| for bidirectional):
- causal: k <= q; a prefix (prefix-LM) of `prefix_B` positions is bidirectional: keys k < prefix are visible to
  every query of that example.
- window W > 0: only d < W (a query sees W positions including itself, as Mistral's and Gemma's
  `sliding_window`).
- stride s > 0 (Sparse Transformer, strided): d < s or d % s == 0.
- global_tokens g > 0 (Longformer): the first g positions see, and are seen by, every position (causality
  still holds for a causal model).
Window, stride and global tokens are alternatives that add up (a pair is visible if any allows it); the order
rule (causal/prefix), documents and padding restrict every pattern.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    causal: bool = True
    window: int = 0
    stride: int = 0
    global_tokens: int = 0

    @property
    def local(self) -> bool:
        """True when a query sees only a band of keys around it (a window without any long-range pattern)."""
        return self.window > 0 and not self.stride and not self.global_tokens

    def describe(self) -> str:
        parts = ["causal" if self.causal else "bidirectional"]
        parts += [f"window {self.window}"] * bool(self.window) + [f"stride {self.stride}"] * bool(self.stride)
        parts += [f"{self.global_tokens} global tokens"] * bool(self.global_tokens)
        return ", ".join(parts)


class MaskArrays(NamedTuple):
    """Per-example mask inputs (any may be None): document ids of the queries and keys (self-attention over a
    packed sequence), key padding (True = a real key) and prefix lengths (prefix-LM)."""

    segments_BL: jnp.ndarray | None = None
    segments_BS: jnp.ndarray | None = None
    padding_BS: jnp.ndarray | None = None
    prefix_B: jnp.ndarray | None = None


def visible(spec: MaskSpec, arrays: MaskArrays, q_pos, k_pos, q_index=None, k_index=None):
    """Boolean (B or 1, len(q_pos), len(k_pos)): may query position q attend to key position k.

    `q_pos`/`k_pos` are absolute positions; `q_index`/`k_index` (default: the positions) index the per-example
    arrays, which differ from the positions only when a caller pads a tile beyond the sequence (blockwise)."""
    q_index = q_pos if q_index is None else q_index
    k_index = k_pos if k_index is None else k_index
    q, k = q_pos[:, None], k_pos[None, :]
    distance = q - k if spec.causal else jnp.abs(q - k)
    ok = jnp.ones(distance.shape, bool)[None]
    if spec.causal:
        order = (k <= q)[None]
        if arrays.prefix_B is not None:
            order = order | (k[None] < arrays.prefix_B[:, None, None])
        ok = ok & order
    if spec.window or spec.stride or spec.global_tokens:
        pattern = jnp.zeros(distance.shape, bool)
        if spec.window:
            pattern = pattern | (distance < spec.window)
        if spec.stride:
            pattern = pattern | (distance < spec.stride) | (distance % spec.stride == 0)
        if spec.global_tokens:
            pattern = pattern | (k < spec.global_tokens) | (q < spec.global_tokens)
        ok = ok & pattern[None]
    if arrays.segments_BL is not None:
        seg_q = jnp.take(arrays.segments_BL, q_index, axis=1)
        seg_k = jnp.take(arrays.segments_BS, k_index, axis=1)
        ok = ok & (seg_q[:, :, None] == seg_k[:, None, :])
    if arrays.padding_BS is not None:
        ok = ok & jnp.take(arrays.padding_BS, k_index, axis=1).astype(bool)[:, None, :]
    return ok


def _max_prefix(arrays: MaskArrays):
    return None if arrays.prefix_B is None else jnp.max(arrays.prefix_B)


def key_block_range(spec: MaskSpec, arrays: MaskArrays, i, block_q: int, block_k: int, n_k: int):
    """[lo, hi) of the key blocks that may hold a key visible to some query of query block i (a superset)."""
    first_q, last_q = i * block_q, (i + 1) * block_q - 1
    lo, hi = 0, n_k
    if spec.causal:
        hi = jnp.minimum(n_k, last_q // block_k + 1)
        prefix = _max_prefix(arrays)
        if prefix is not None:
            hi = jnp.maximum(hi, jnp.minimum(n_k, (prefix + block_k - 1) // block_k))
    if spec.local and arrays.prefix_B is None:
        lo = jnp.maximum(0, (first_q - spec.window + 1) // block_k)
        if not spec.causal:
            hi = jnp.minimum(n_k, (last_q + spec.window - 1) // block_k + 1)
    return lo, hi


def query_block_range(spec: MaskSpec, arrays: MaskArrays, j, block_q: int, block_k: int, n_q: int):
    """[lo, hi) of the query blocks that may see some key of key block j (a superset)."""
    first_k, last_k = j * block_k, (j + 1) * block_k - 1
    lo, hi = 0, n_q
    if spec.causal:
        lo = first_k // block_q
        prefix = _max_prefix(arrays)
        if prefix is not None:
            lo = jnp.where(first_k < prefix, 0, lo)
    if spec.local and arrays.prefix_B is None:
        hi = jnp.minimum(n_q, (last_k + spec.window - 1) // block_q + 1)
        if not spec.causal:
            lo = jnp.maximum(0, (first_k - spec.window + 1) // block_q)
    return lo, hi
