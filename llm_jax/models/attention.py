"""Self-attention: MHA, GQA and MQA are one module, chosen by `n_kv_heads`; causal (decoder) or bidirectional
with a key-padding mask (encoder); sliding-window, strided and global-token patterns (`masks.py`).

One entry point, `attend`, several implementations (`model.attention_impl`) that compute the same function:
- `xla`: the reference — the (L x S) float32 score matrix, then softmax and the weighted sum (causal
  self-attention from `CAUSAL_SPLIT_FROM` tokens in two query halves, skipping the quarter the mask hides).
- `blockwise`: the memory-efficient flash algorithm in pure JAX (`blockwise.py`), every backend; skips the
  tiles the mask leaves empty.
- `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")`, GPU only, 16-bit, causal/bidirectional
  with an optional sliding window (no document, padding, strided or global-token masks, no score bias).
- `auto`: cuDNN on a GPU where it applies; else `blockwise` from `BLOCKWISE_FROM` tokens (or whenever a
  window/stride makes tiles skippable); else `xla`. The choice and any fallback are printed once per process.
"""

from __future__ import annotations

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models.blockwise import blockwise_attention
from llm_jax.models.config import ModelConfig
from llm_jax.models.layers import dense
from llm_jax.models.masks import MaskArrays, MaskSpec, visible
from llm_jax.models.positions import apply_rope
from llm_jax.models.rope_scaling import rope_parameters
from llm_jax.models.splash import query_shards, splash_attention, unsupported as splash_blocker

CAUSAL_SPLIT_FROM = 256  # `xla` computes causal self-attention in two query halves from this many tokens
BLOCKWISE_FROM = 1024  # `auto` uses the blockwise path from this many query tokens (bench attention: docs/attention.md)
_ANNOUNCED: set[str] = set()


def xla_attention(q_BLKGd, k_BSKd, v_BSKd, spec: MaskSpec, arrays: MaskArrays, scale: float, bias_BKGLS=None,
                  mask_BLS=None):
    """softmax(Q K^T * scale + bias + M) V; scores and softmax in float32. `mask_BLS` replaces the mask of queries
    at positions 0..L-1 (a KV cache's queries sit elsewhere: `cached_mask`).

    Causal self-attention from `CAUSAL_SPLIT_FROM` tokens is computed in two query halves, the first against the
    first half of the keys only: the quarter of the score matrix the mask hides entirely is never computed
    (a quarter less score and weighted-sum work; ~8% of an attention layer, forward + backward, at the bench
    shape on XLA:CPU: docs/performance.md). Not when the mesh splits the length (`mesh.context`): the halves
    would cut across its shards."""
    L, S = q_BLKGd.shape[1], k_BSKd.shape[1]
    if mask_BLS is None and spec.causal and arrays.prefix_B is None and S == L and L % 2 == 0 \
            and L >= CAUSAL_SPLIT_FROM and query_shards(L) == 1:
        h = L // 2
        halves = []
        for lo, hi in ((0, h), (h, L)):  # queries lo..hi-1 see keys 0..hi-1 at most
            mask = visible(spec, arrays, jnp.arange(lo, hi), jnp.arange(hi))
            bias = None if bias_BKGLS is None else bias_BKGLS[..., lo:hi, :hi]
            halves.append(_full_attention(q_BLKGd[:, lo:hi], k_BSKd[:, :hi], v_BSKd[:, :hi], mask, scale, bias))
        return jnp.concatenate(halves, axis=1)
    if mask_BLS is None:
        mask_BLS = visible(spec, arrays, jnp.arange(L), jnp.arange(S))
    return _full_attention(q_BLKGd, k_BSKd, v_BSKd, mask_BLS, scale, bias_BKGLS)


def _full_attention(q_BLKGd, k_BSKd, v_BSKd, mask_BLS, scale: float, bias_BKGLS=None):
    """The whole (L x S) score matrix under `mask_BLS`. Both products are plain batched matmuls over N = B*K rows
    of queries R = G*L (a K/V head's G query heads stacked): the explicit head-major copies cost little, while
    the same products written as one einsum over the (B, L, K, G, d) layout ran ~25% slower per attention layer,
    forward + backward, on XLA:CPU (docs/performance.md)."""
    B, L, K, G, hd = q_BLKGd.shape
    S = k_BSKd.shape[1]
    q_NRd = q_BLKGd.transpose(0, 2, 3, 1, 4).reshape(B * K, G * L, hd)
    k_NSd = k_BSKd.transpose(0, 2, 1, 3).reshape(B * K, S, hd)
    v_NSd = v_BSKd.transpose(0, 2, 1, 3).reshape(B * K, S, hd)
    scores_NRS = jnp.matmul(q_NRd, k_NSd.swapaxes(1, 2), preferred_element_type=jnp.float32) * scale
    scores_BKGLS = scores_NRS.reshape(B, K, G, L, S)
    if bias_BKGLS is not None:
        scores_BKGLS = scores_BKGLS + bias_BKGLS
    scores_BKGLS = jnp.where(mask_BLS[:, None, None], scores_BKGLS, jnp.finfo(jnp.float32).min)
    probs_NRS = jax.nn.softmax(scores_BKGLS, axis=-1).astype(v_BSKd.dtype).reshape(B * K, G * L, S)
    out_NRd = jnp.matmul(probs_NRS, v_NSd)
    return out_NRd.reshape(B, K, G, L, hd).transpose(0, 3, 1, 2, 4)


def prefixed_attention(q_BLHd, k_BSKd, v_BSKd, mask_BLS, prefix, scale: float):
    """Attention over `prefix` = (keys, values), each (P, K, d) and visible to every query, followed by the
    sequence's keys and values under `mask_BLS` (prefix tuning; the whole score matrix, as `xla`)."""
    B, L, H, hd = q_BLHd.shape
    K = k_BSKd.shape[2]
    pk, pv = (jnp.broadcast_to(p[None].astype(k_BSKd.dtype), (B,) + p.shape) for p in prefix)
    mask = jnp.broadcast_to(mask_BLS, (B,) + mask_BLS.shape[1:])
    mask = jnp.concatenate([jnp.ones((B, L, pk.shape[1]), bool), mask], axis=-1)
    out_BLKGd = xla_attention(q_BLHd.reshape(B, L, K, H // K, hd), jnp.concatenate([pk, k_BSKd], 1),
                              jnp.concatenate([pv, v_BSKd], 1), None, None, scale, mask_BLS=mask)
    return out_BLKGd.reshape(B, L, H, hd)


def cached_mask(spec: MaskSpec, positions_BL, S: int):
    """(B, L, S): which cache slots the queries at `positions_BL` see. Slot s holds the key of position s, so the
    causal rule (and any window) on positions is the whole mask: slots past a query were never written for this
    sequence yet, or hold a stale key a padded prompt left there, and both are later than the query."""
    return jax.vmap(lambda q_pos_L: visible(spec, MaskArrays(), q_pos_L, jnp.arange(S))[0])(positions_BL)


def cudnn_attention(q_BLHd, k_BSKd, v_BSKd, spec: MaskSpec, scale: float):
    window = (spec.window - 1, 0 if spec.causal else spec.window - 1) if spec.window else None
    return jax.nn.dot_product_attention(q_BLHd, k_BSKd, v_BSKd, is_causal=spec.causal, scale=scale,
                                        local_window_size=window, implementation="cudnn")


def _announce(message: str, key: str | None = None) -> None:
    """Prints `message` the first time `key` (default: the message) is seen in this process."""
    key = message if key is None else key
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        print(f"attention: {message}", file=sys.stderr, flush=True)


def platform() -> str:
    """The platform attention is traced for: the active mesh's devices (a TPU topology under `llm-jax compile`)
    or else the default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    return jax.default_backend() if mesh.empty or mesh.abstract_device is None else mesh.abstract_device.platform


def choose_impl(requested: str, backend: str, dtype: str, spec: MaskSpec, arrays: MaskArrays, has_bias: bool,
                length: int, block: int = 512) -> tuple[str, str]:
    """(implementation, why) for `model.attention_impl=requested`; an explicit request that cannot serve this
    call is a ValueError naming the reason."""
    cudnn_blocker = ("not a GPU" if backend != "gpu" else "float32 (cuDNN flash attention needs 16-bit)"
                     if dtype == "float32" else "a score bias" if has_bias else "a strided/global-token mask"
                     if spec.stride or spec.global_tokens else "a document/padding/prefix mask"
                     if any(a is not None for a in arrays) else "")
    splash_why = ("not a TPU" if backend != "tpu" else
                  splash_blocker(spec, arrays, has_bias, length, block))
    if requested == "cudnn" and cudnn_blocker:
        raise ValueError(f"model.attention_impl=cudnn cannot run this attention: {cudnn_blocker}")
    if requested == "splash":
        blocker = splash_blocker(spec, arrays, has_bias, length, block)
        if blocker:
            raise ValueError(f"model.attention_impl=splash cannot run this attention: {blocker}")
        return "splash", "requested" if backend == "tpu" else "requested; Pallas interpret mode (not a TPU: slow)"
    if requested == "blockwise" and has_bias:
        raise ValueError("model.attention_impl=blockwise does not take a score bias (T5's relative positions); "
                         "use xla")
    if requested != "auto":
        return requested, "requested"
    if not cudnn_blocker:
        return "cudnn", "GPU, 16-bit, a mask cuDNN takes"
    if not splash_why:
        return "splash", "TPU, a mask the splash kernel takes"
    if has_bias:
        return "xla", "a score bias needs the whole score matrix"
    other = f"splash: {splash_why}" if backend == "tpu" else f"cuDNN: {cudnn_blocker}"
    if length >= BLOCKWISE_FROM:
        return "blockwise", f"{length} >= {BLOCKWISE_FROM} tokens ({other})"
    if spec.window and spec.window < length:
        return "blockwise", f"a {spec.window}-token window skips tiles"
    return "xla", f"{length} < {BLOCKWISE_FROM} tokens"


def attend(cfg: ModelConfig, q_BLHd, k_BSKd, v_BSKd, spec: MaskSpec, arrays: MaskArrays, scale=None,
           bias_BHLS=None):
    """Attention of queries (B, L, H, d) over keys/values (B, S, K, d) with `cfg.attention_impl`; each K/V head
    serves H/K query heads (grouped, never repeated, so GQA/MQA save memory as well as parameters)."""
    B, L, H, hd = q_BLHd.shape
    K = k_BSKd.shape[2]
    scale = 1.0 / hd ** 0.5 if scale is None else scale
    backend = platform()
    impl, why = choose_impl(cfg.attention_impl, backend, cfg.dtype, spec, arrays, bias_BHLS is not None, L,
                            cfg.attention_block)
    if cfg.attention_impl == "auto" or why != "requested":
        _announce(f"{impl} ({spec.describe()}; {why})", key=f"{impl} {spec}")  # once, not once per length
    if impl == "cudnn":
        try:
            return cudnn_attention(q_BLHd, k_BSKd, v_BSKd, spec, scale)
        except (ValueError, NotImplementedError, RuntimeError) as e:  # shape/dtype checks run at trace time
            if cfg.attention_impl == "cudnn":
                raise
            impl = "blockwise" if L >= BLOCKWISE_FROM else "xla"
            _announce(f"cuDNN refused ({str(e).splitlines()[0][:120]}); falling back to {impl}")
    q_BLKGd = q_BLHd.reshape(B, L, K, H // K, hd)
    if impl == "splash":
        out_BLKGd = splash_attention(q_BLKGd, k_BSKd, v_BSKd, spec, arrays, scale, cfg.attention_block,
                                     interpret=backend != "tpu")
    elif impl == "blockwise":
        out_BLKGd = blockwise_attention(q_BLKGd, k_BSKd, v_BSKd, spec, arrays, scale, cfg.attention_block,
                                        cfg.attention_block)
    else:
        bias = None if bias_BHLS is None else bias_BHLS.reshape(bias_BHLS.shape[0], K, H // K, *bias_BHLS.shape[2:])
        out_BLKGd = xla_attention(q_BLKGd, k_BSKd, v_BSKd, spec, arrays, scale, bias)
    return out_BLKGd.reshape(B, L, H, hd)


class Attention(nn.Module):
    """Q, K, V projections, optional RoPE, masked attention, output projection. `padding_BL` (True = real token)
    hides padding keys — of `kv_BSD` when given: cross-attention (encoder-decoder), whose keys and values come
    from the encoder output and get no rotary positions and no mask pattern. `bias_BHLS` is an additive score
    bias (T5's relative positions). `window`: this layer's sliding window (0 = none; `local_global_pattern`
    decides per layer). `cross`: a cross-attention layer; decoding keeps its keys and values in the cache
    (`_cross_cache`), so a decode step passes no `kv_BSD`."""

    cfg: ModelConfig
    causal: bool = True
    window: int = 0
    cross: bool = False

    @nn.compact
    def __call__(self, x_BLD, positions_BL, segments_BL=None, padding_BL=None, *, kv_BSD=None, bias_BHLS=None):
        cfg = self.cfg
        H, K, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        cross, caching = self.cross or kv_BSD is not None, self.is_mutable_collection("cache")
        q_BLHd = dense(cfg, (H, hd), 1, ("embed", "heads", "head_dim"), ("heads", "head_dim"), "query")(x_BLD)
        key = dense(cfg, (K, hd), 1, ("embed", "kv_heads", "head_dim"), ("kv_heads", "head_dim"), "key")
        value = dense(cfg, (K, hd), 1, ("embed", "kv_heads", "head_dim"), ("kv_heads", "head_dim"), "value")
        if cross and caching:
            k_BLKd, v_BLKd, padding_BL = self._cross_cache(key, value, kv_BSD, padding_BL)
        else:
            source_BSD = x_BLD if kv_BSD is None else kv_BSD
            k_BLKd, v_BLKd = key(source_BSD), value(source_BSD)
        if cfg.positions == "rope" and not cross:
            inv_freq, factor = rope_parameters(cfg, positions_BL)
            q_BLHd = apply_rope(q_BLHd, positions_BL, inv_freq, factor)
            k_BLKd = apply_rope(k_BLKd, positions_BL, inv_freq, factor)
        q_BLHd = nn.with_logical_constraint(q_BLHd, ("batch", "length", "heads", "head_dim"))
        # every query needs every key: under context parallelism K and V are gathered along the sequence here
        k_BLKd = nn.with_logical_constraint(k_BLKd, ("batch", None, "kv_heads", "head_dim"))
        v_BLKd = nn.with_logical_constraint(v_BLKd, ("batch", None, "kv_heads", "head_dim"))
        scale = 1.0 / hd if cfg.mup else 1.0 / hd ** 0.5
        if not cross:
            spec = MaskSpec(self.causal, self.window, cfg.attention_stride, cfg.attention_global_tokens)
            arrays = MaskArrays(segments_BL, segments_BL, padding_BL)
        else:
            spec, arrays = MaskSpec(causal=False), MaskArrays(padding_BS=padding_BL)
        prefix = self._prefix() if cfg.peft == "prefix" and not cross else None
        if not cross and self.causal and caching:  # a bidirectional (encoder) layer is never cached
            out_BLHd = self._with_cache(q_BLHd, k_BLKd, v_BLKd, positions_BL, spec, scale, bias_BHLS, prefix)
        elif prefix is not None:
            L = q_BLHd.shape[1]
            out_BLHd = prefixed_attention(q_BLHd, k_BLKd, v_BLKd, visible(spec, arrays, jnp.arange(L), jnp.arange(L)),
                                          prefix, scale)
        else:
            out_BLHd = attend(cfg, q_BLHd, k_BLKd, v_BLKd, spec, arrays, scale, bias_BHLS)
        out_BLHd = nn.with_logical_constraint(out_BLHd, ("batch", "length", "heads", "head_dim"))
        out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5
        return dense(cfg, cfg.d_model, 2, ("heads", "head_dim", "embed"), ("embed",), "out", std=out_std)(out_BLHd)

    def _prefix(self):
        """Prefix tuning's (key, value) prefixes of this layer: model.prefix_len positions, (P, K, head_dim) each."""
        cfg = self.cfg
        shape, names = (cfg.prefix_len, cfg.n_kv_heads, cfg.head_dim), (None, "kv_heads", "head_dim")
        init = nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), names)
        return (self.param("prefix_key", init, shape, cfg.weight_dtype),
                self.param("prefix_value", init, shape, cfg.weight_dtype))

    def _with_cache(self, q_BLHd, k_BLKd, v_BLKd, positions_BL, spec: MaskSpec, scale: float, bias_BHLS=None,
                    prefix=None):
        """Self-attention through the KV cache (decoding): this call's keys and values are written into the
        `cache` collection at their positions (slot = position), then the queries attend over every slot.
        Prefill (L = prompt length) and each decode step (L = 1) are the same code. The caller sizes the cache
        (`infer/decode.py: empty_cache`, slots for the prompt and its new tokens); without one, the first call
        creates `model.seq_len` slots per sequence. Keys and values are kept in the compute dtype, or with
        model.kv_cache_dtype=int8 as int8 codes with one float32 absmax scale per (position, K/V head),
        dequantized where attention reads them. `bias_BHLS`, if any, is over (query positions, every slot)."""
        cfg = self.cfg
        B, L, H, hd = q_BLHd.shape
        K = cfg.n_kv_heads
        read = []
        for name, new_BLKd in (("key", k_BLKd), ("value", v_BLKd)):
            if cfg.kv_cache_dtype == "int8":
                codes = self._cache_var(f"cached_{name}", B, K, hd, jnp.int8)
                scales = self._cache_var(f"cached_{name}_scale", B, K, 1, jnp.float32)
                scale_BLK1 = jnp.maximum(jnp.max(jnp.abs(new_BLKd.astype(jnp.float32)), -1, keepdims=True),
                                         1e-8) / 127.0
                _write(codes, positions_BL, jnp.round(new_BLKd.astype(jnp.float32) / scale_BLK1).astype(jnp.int8))
                _write(scales, positions_BL, scale_BLK1)
                read.append((codes.value.astype(jnp.float32) * scales.value).astype(cfg.compute_dtype))
            else:
                cache = self._cache_var(f"cached_{name}", B, K, hd, cfg.compute_dtype)
                _write(cache, positions_BL, new_BLKd.astype(cfg.compute_dtype))
                read.append(cache.value)
        mask_BLS = cached_mask(spec, positions_BL, read[0].shape[1])
        if prefix is not None:
            return prefixed_attention(q_BLHd, read[0], read[1], mask_BLS, prefix, scale)
        bias = None if bias_BHLS is None else bias_BHLS.reshape(bias_BHLS.shape[0], K, H // K, *bias_BHLS.shape[2:])
        out_BLKGd = xla_attention(q_BLHd.reshape(B, L, K, H // K, hd), read[0], read[1], spec, MaskArrays(),
                                  scale, bias, mask_BLS=mask_BLS)
        return out_BLKGd.reshape(B, L, H, hd)

    def _cross_cache(self, key, value, kv_BSD, padding_BS):
        """Cross-attention keys and values through the cache (encoder-decoder decoding): computed from the encoder
        output `kv_BSD` by the call that passes it (prefill) and kept with its padding mask (True = real token,
        None = all real); a call without it (each decode step) reads the three back instead of recomputing them.
        Kept in the compute dtype (model.kv_cache_dtype applies to self-attention only)."""
        names = ("cached_cross_key", "cached_cross_value", "cached_cross_padding")
        if kv_BSD is None:
            if not self.has_variable("cache", names[0]):
                raise ValueError("cross-attention without the encoder output needs it in the cache: the first "
                                 "call with a cache (prefill) must pass it")
            return tuple(self.get_variable("cache", n) for n in names)
        padding_BS = jnp.ones(kv_BSD.shape[:2], bool) if padding_BS is None else padding_BS.astype(bool)
        kept = (key(kv_BSD).astype(self.cfg.compute_dtype), value(kv_BSD).astype(self.cfg.compute_dtype), padding_BS)
        for name, x, axes in zip(names, kept, (CACHE_AXES, CACHE_AXES, ("batch", None))):
            self.put_variable("cache", name, nn.with_logical_constraint(x, axes))
        return kept

    def _cache_var(self, name: str, B: int, K: int, last: int, dtype):
        """A `cache` variable (batch, slots, kv_heads, last), model.seq_len slots unless the caller gave one."""
        return self.variable("cache", name, lambda: nn.with_logical_constraint(
            jnp.zeros((B, self.cfg.seq_len, K, last), dtype), CACHE_AXES))


CACHE_AXES = ("batch", None, "kv_heads", "head_dim")


def _write(variable, positions_BL, new_BLKx) -> None:
    """Puts each row's new entries at its positions' slots (slots past the end are dropped)."""
    rows_B1 = jnp.arange(new_BLKx.shape[0])[:, None]
    written = variable.value.at[rows_B1, positions_BL].set(new_BLKx, mode="drop")
    variable.value = nn.with_logical_constraint(written, CACHE_AXES)
