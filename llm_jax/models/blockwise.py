"""Memory-efficient (flash) attention in pure JAX: runs on every backend.

The forward pass walks the key blocks of each query block with an online softmax (running max `m`, running
sum `l`, unnormalised output `acc`) and keeps only the output and the log-sum-exp per query; the backward pass
(a custom VJP, FlashAttention-2's order: key blocks outside, query blocks inside) recomputes each tile's
probabilities from the log-sum-exp. Temporary memory is O(L x block) instead of the `xla` path's O(L x S)
scores, and tiles that `masks.key_block_range` / `query_block_range` prove empty (above the causal diagonal,
outside a sliding window) are never computed.

Numerics follow `attention.xla_attention`: scores, softmax and accumulation in float32, the two matmuls'
inputs in the compute dtype. A query that sees no key at all (only possible with padding or prefix masks)
outputs zeros here, where the `xla` path averages every value; such positions are padding and never scored.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from llm_jax.models.masks import MaskArrays, MaskSpec, key_block_range, query_block_range, visible

DEFAULT_BLOCK = 512


def _tile_mask(spec, arrays, q_start, k_start, block_q, block_k, L, S):
    q_pos = q_start + jnp.arange(block_q)
    k_pos = k_start + jnp.arange(block_k)
    ok = visible(spec, arrays, q_pos, k_pos, jnp.minimum(q_pos, L - 1), jnp.minimum(k_pos, S - 1))
    return (ok & (k_pos < S)[None, None, :])[:, None, None]  # (B|1, 1, 1, bq, bk) over (B, K, G, bq, bk)


def _slice(x, start, size, axis=1):
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis)


def _forward(q_BLKGd, k_BSKd, v_BSKd, arrays, spec, scale, block_q, block_k, L, S):
    B, Lp, K, G, d = q_BLKGd.shape
    n_q, n_k = Lp // block_q, k_BSKd.shape[1] // block_k

    def query_block(i):
        q_BQKGd = _slice(q_BLKGd, i * block_q, block_q)

        def key_block(j, carry):
            m_BKGQ, l_BKGQ, acc_BKGQd = carry
            k_BCKd, v_BCKd = _slice(k_BSKd, j * block_k, block_k), _slice(v_BSKd, j * block_k, block_k)
            s_BKGQC = jnp.einsum("bqkgd,bckd->bkgqc", q_BQKGd, k_BCKd, preferred_element_type=jnp.float32) * scale
            ok = _tile_mask(spec, arrays, i * block_q, j * block_k, block_q, block_k, L, S)
            s_BKGQC = jnp.where(ok, s_BKGQC, -jnp.inf)
            m_new = jnp.maximum(m_BKGQ, s_BKGQC.max(-1))
            m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
            p_BKGQC = jnp.exp(s_BKGQC - m_safe[..., None])
            correction = jnp.exp(m_BKGQ - m_safe)
            l_BKGQ = l_BKGQ * correction + p_BKGQC.sum(-1)
            acc_BKGQd = acc_BKGQd * correction[..., None] + jnp.einsum(
                "bkgqc,bckd->bkgqd", p_BKGQC.astype(v_BCKd.dtype), v_BCKd, preferred_element_type=jnp.float32)
            return m_new, l_BKGQ, acc_BKGQd

        lo, hi = key_block_range(spec, arrays, i, block_q, block_k, n_k)
        init = (jnp.full((B, K, G, block_q), -jnp.inf, jnp.float32), jnp.zeros((B, K, G, block_q), jnp.float32),
                jnp.zeros((B, K, G, block_q, d), jnp.float32))
        m_BKGQ, l_BKGQ, acc_BKGQd = jax.lax.fori_loop(lo, hi, key_block, init)
        seen = l_BKGQ > 0
        out_BKGQd = jnp.where(seen[..., None], acc_BKGQd / jnp.where(seen, l_BKGQ, 1.0)[..., None], 0.0)
        lse_BKGQ = jnp.where(seen, jnp.where(jnp.isfinite(m_BKGQ), m_BKGQ, 0.0) + jnp.log(l_BKGQ), jnp.inf)
        return out_BKGQd.astype(q_BLKGd.dtype), lse_BKGQ

    out_NBKGQd, lse_NBKGQ = jax.lax.map(query_block, jnp.arange(n_q))
    out_BLKGd = jnp.moveaxis(out_NBKGQd, 0, 3).reshape(B, K, G, Lp, d).transpose(0, 3, 1, 2, 4)
    lse_BKGL = jnp.moveaxis(lse_NBKGQ, 0, 3).reshape(B, K, G, Lp)
    return out_BLKGd, lse_BKGL


def _backward(q_BLKGd, k_BSKd, v_BSKd, arrays, out_BLKGd, lse_BKGL, dout_BLKGd, spec, scale, block_q, block_k,
              L, S):
    B, Lp, K, G, d = q_BLKGd.shape
    n_q, n_k = Lp // block_q, k_BSKd.shape[1] // block_k
    # D_i = rowsum(dO_i * O_i): the softmax backward's correction term, one number per query
    delta_BKGL = jnp.einsum("blkgd,blkgd->bkgl", dout_BLKGd.astype(jnp.float32), out_BLKGd.astype(jnp.float32))

    def key_block(dq_BLKGd, j):
        k_BCKd, v_BCKd = _slice(k_BSKd, j * block_k, block_k), _slice(v_BSKd, j * block_k, block_k)

        def query_block(i, carry):
            dq_BLKGd, dk_BCKd, dv_BCKd = carry
            q_BQKGd, do_BQKGd = _slice(q_BLKGd, i * block_q, block_q), _slice(dout_BLKGd, i * block_q, block_q)
            lse_BKGQ, delta_BKGQ = _slice(lse_BKGL, i * block_q, block_q, 3), _slice(delta_BKGL, i * block_q,
                                                                                       block_q, 3)
            s_BKGQC = jnp.einsum("bqkgd,bckd->bkgqc", q_BQKGd, k_BCKd, preferred_element_type=jnp.float32) * scale
            ok = _tile_mask(spec, arrays, i * block_q, j * block_k, block_q, block_k, L, S)
            p_BKGQC = jnp.where(ok, jnp.exp(s_BKGQC - lse_BKGQ[..., None]), 0.0)
            dv_BCKd = dv_BCKd + jnp.einsum("bkgqc,bqkgd->bckd", p_BKGQC.astype(do_BQKGd.dtype), do_BQKGd,
                                           preferred_element_type=jnp.float32)
            dp_BKGQC = jnp.einsum("bqkgd,bckd->bkgqc", do_BQKGd, v_BCKd, preferred_element_type=jnp.float32)
            ds_BKGQC = (p_BKGQC * (dp_BKGQC - delta_BKGQ[..., None]) * scale).astype(q_BQKGd.dtype)
            dk_BCKd = dk_BCKd + jnp.einsum("bkgqc,bqkgd->bckd", ds_BKGQC, q_BQKGd, preferred_element_type=jnp.float32)
            dq_BQKGd = jnp.einsum("bkgqc,bckd->bqkgd", ds_BKGQC, k_BCKd, preferred_element_type=jnp.float32)
            dq_BLKGd = jax.lax.dynamic_update_slice_in_dim(
                dq_BLKGd, _slice(dq_BLKGd, i * block_q, block_q) + dq_BQKGd, i * block_q, 1)
            return dq_BLKGd, dk_BCKd, dv_BCKd

        lo, hi = query_block_range(spec, arrays, j, block_q, block_k, n_q)
        zeros = jnp.zeros((B, block_k, K, d), jnp.float32)
        dq_BLKGd, dk_BCKd, dv_BCKd = jax.lax.fori_loop(lo, hi, query_block, (dq_BLKGd, zeros, zeros))
        return dq_BLKGd, (dk_BCKd, dv_BCKd)

    dq_BLKGd, (dk_NBCKd, dv_NBCKd) = jax.lax.scan(key_block, jnp.zeros(q_BLKGd.shape, jnp.float32),
                                                  jnp.arange(n_k))
    Sp = k_BSKd.shape[1]
    dk_BSKd = jnp.moveaxis(dk_NBCKd, 0, 1).reshape(B, Sp, K, d)
    dv_BSKd = jnp.moveaxis(dv_NBCKd, 0, 1).reshape(B, Sp, K, d)
    return dq_BLKGd.astype(q_BLKGd.dtype), dk_BSKd.astype(k_BSKd.dtype), dv_BSKd.astype(v_BSKd.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8, 9))
def _flash(q, k, v, arrays, spec, scale, block_q, block_k, L, S):
    return _forward(q, k, v, arrays, spec, scale, block_q, block_k, L, S)[0]


def _flash_fwd(q, k, v, arrays, spec, scale, block_q, block_k, L, S):
    out, lse = _forward(q, k, v, arrays, spec, scale, block_q, block_k, L, S)
    return out, (q, k, v, arrays, out, lse)


def _flash_bwd(spec, scale, block_q, block_k, L, S, residuals, dout):
    q, k, v, arrays, out, lse = residuals
    dq, dk, dv = _backward(q, k, v, arrays, out, lse, dout, spec, scale, block_q, block_k, L, S)
    return dq, dk, dv, jax.tree.map(lambda _: None, arrays)


_flash.defvjp(_flash_fwd, _flash_bwd)


def _pad_to(x, multiple: int):
    pad = -x.shape[1] % multiple
    return x if not pad else jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))


def blockwise_attention(q_BLKGd, k_BSKd, v_BSKd, spec: MaskSpec, arrays: MaskArrays, scale: float,
                        block_q: int = DEFAULT_BLOCK, block_k: int = DEFAULT_BLOCK):
    """softmax(Q K^T * scale + mask) V over grouped queries (B, L, K, G, d) and keys/values (B, S, K, d), one
    (block_q x block_k) tile at a time. Lengths that are not a multiple of the block are padded (the padding
    keys are invisible, the padding queries dropped)."""
    L, S = q_BLKGd.shape[1], k_BSKd.shape[1]
    block_q, block_k = min(block_q, L), min(block_k, S)
    out = _flash(_pad_to(q_BLKGd, block_q), _pad_to(k_BSKd, block_k), _pad_to(v_BSKd, block_k), arrays, spec,
                 float(scale), block_q, block_k, L, S)
    return out[:, :L]
