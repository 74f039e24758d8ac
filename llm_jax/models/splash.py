"""`splash`: the TPU's block-sparse flash attention kernel (`jax.experimental.pallas.ops.tpu.splash_attention`)
behind the project's masks.

What runs where: on a TPU the Pallas kernel is compiled by Mosaic (and `llm-jax compile --topology ...` compiles
it with the real TPU compiler on this CPU); on any other backend the same kernel runs in Pallas interpret mode —
the kernel's own program evaluated op by op, correct but slow, which is how the tests check its numerics on CPU.

The kernel takes static patterns (causal, bidirectional, a sliding window: its block-sparsity tables are built
from them once per shape) and document ids (`SegmentIds`); per-example key padding, prefix-LM prefixes and the
strided/global-token patterns are not expressible and `unsupported` names them, so `auto` falls back. One
multi-query kernel serves each K/V head's group of query heads (vmapped over batch and K/V heads), so GQA/MQA
never repeat K/V. Under a multi-device mesh it runs inside `shard_map`: batch, K/V heads and query length are
split like the surrounding activations (the query-length split is the `context` axis: the kernel is built with
`q_seq_shards` and its mask tables are sharded with it), K/V arrive whole along the sequence (attention.py
gathers them), as the blockwise path does.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa
from jax.sharding import NamedSharding, PartitionSpec

from llm_jax.models.masks import MaskArrays, MaskSpec

TPU_BLOCK = 128  # the kernel's tiles are multiples of this (TPU lanes; checked in interpret mode too)


def unsupported(spec: MaskSpec, arrays: MaskArrays, has_bias: bool, length: int, block: int) -> str:
    """Why the splash kernel cannot serve this call ('' when it can)."""
    if has_bias:
        return "a score bias"
    if spec.stride or spec.global_tokens:
        return "a strided/global-token mask"
    if arrays.padding_BS is not None or arrays.prefix_B is not None:
        return "a padding/prefix mask"
    shards = query_shards(length)
    length //= shards
    size = min(block, length)
    if size % TPU_BLOCK:
        return f"a {size}-token tile (the kernel needs multiples of {TPU_BLOCK}: model.attention_block, seq_len)"
    if length % size:
        where = " per context shard" if shards > 1 else ""
        return f"length {length}{where} is not a multiple of the {size}-token tile"
    return ""


def query_shards(length: int) -> int:
    """Into how many pieces the active mesh splits the query length (the `context` axis; 1 without a mesh)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return 1
    axes = nn.logical_to_mesh_axes(("length",))[0]
    axes = () if axes is None else axes if isinstance(axes, tuple) else (axes,)
    n = math.prod(mesh.shape[a] for a in axes)
    return n if length % n == 0 else 1


def _base_mask(spec: MaskSpec, L: int, S: int):
    if spec.window:
        return sa.LocalMask((L, S), (spec.window - 1, 0 if spec.causal else spec.window - 1), offset=0)
    return sa.CausalMask((L, S)) if spec.causal else sa.FullMask((L, S))


def _kernel(spec: MaskSpec, heads: int, L: int, S: int, block: int, q_shards: int, interpret: bool):
    """The multi-query kernel for `heads` query heads over one K/V head; its block-sparsity tables are built on
    the host from the static pattern when the step is traced."""
    bq, bkv = min(block, L), min(block, S)
    sizes = sa.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
                          block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)
    mask = sa.MultiHeadMask([_base_mask(spec, L, S)] * heads)
    return sa.make_splash_mqa(mask, block_sizes=sizes, head_shards=1, q_seq_shards=q_shards, interpret=interpret)


def _spec_for(mesh, logical: tuple, shape: tuple) -> PartitionSpec:
    """Mesh axes of `logical` names, dropping any the dimension does not divide."""
    axes = nn.logical_to_mesh_axes(logical)
    def size(a):
        return 1 if a is None else math.prod(mesh.shape[x] for x in (a if isinstance(a, tuple) else (a,)))
    return PartitionSpec(*[a if dim % size(a) == 0 else None for a, dim in zip(axes, shape)])


def splash_attention(q_BLKGd, k_BSKd, v_BSKd, spec: MaskSpec, arrays: MaskArrays, scale: float, block: int,
                     interpret: bool):
    """Masked attention of (B, L, K, G, d) queries over (B, S, K, d) keys/values with the splash kernel."""
    B, L, K, G, d = q_BLKGd.shape
    S = k_BSKd.shape[1]
    q_BLKGd = q_BLKGd * jnp.asarray(scale, q_BLKGd.dtype)  # the kernel applies no scale
    segments = arrays.segments_BL is not None
    seg_q_BL = arrays.segments_BL if segments else jnp.zeros((B, L), jnp.int32)
    seg_kv_BS = arrays.segments_BS if segments else jnp.zeros((B, S), jnp.int32)

    mesh = jax.sharding.get_abstract_mesh()
    sharded = not mesh.empty and mesh.size > 1
    if sharded:
        q_spec = _spec_for(mesh, ("batch", "length", "kv_heads", None, "head_dim"), q_BLKGd.shape)
        if q_spec[2] is None:  # fewer K/V heads than the tensor axis (MQA): split the query heads of each group
            heads_axes = _spec_for(mesh, ("batch", "length", "heads", "head_dim"), (B, L, G, d))[2]
            q_spec = PartitionSpec(q_spec[0], q_spec[1], None, heads_axes, q_spec[4])
        kv_spec = PartitionSpec(q_spec[0], None, q_spec[2], q_spec[4])
        local = NamedSharding(mesh, q_spec).shard_shape(q_BLKGd.shape)
        q_shards = L // local[1]
        kernel = _kernel(spec, local[3], L, S, block, q_shards, interpret)
        kernel_spec = kernel.manual_sharding_spec(NamedSharding(mesh, PartitionSpec(None, q_spec[1])))
    else:
        kernel = _kernel(spec, G, L, S, block, 1, interpret)

    def run(kernel, q_BLKGd, k_BSKd, v_BSKd, seg_q_BL, seg_kv_BS):
        def one(q_GLd, k_Sd, v_Sd, sq_L, skv_S):
            return kernel(q_GLd, k_Sd, v_Sd, segment_ids=sa.SegmentIds(q=sq_L, kv=skv_S) if segments else None)
        over_heads = jax.vmap(one, in_axes=(0, 0, 0, None, None))        # K/V heads
        over_batch = jax.vmap(over_heads, in_axes=(0, 0, 0, 0, 0))       # examples
        out_BKGLd = over_batch(q_BLKGd.transpose(0, 2, 3, 1, 4), k_BSKd.transpose(0, 2, 1, 3),
                               v_BSKd.transpose(0, 2, 1, 3), seg_q_BL, seg_kv_BS)
        return out_BKGLd.transpose(0, 3, 1, 2, 4)

    if not sharded:
        return run(kernel, q_BLKGd, k_BSKd, v_BSKd, seg_q_BL, seg_kv_BS)
    seg_q_spec, seg_kv_spec = PartitionSpec(q_spec[0], q_spec[1]), PartitionSpec(q_spec[0], None)
    return jax.shard_map(run, mesh=mesh, in_specs=(kernel_spec, q_spec, kv_spec, kv_spec, seg_q_spec, seg_kv_spec),
                         out_specs=q_spec, check_vma=False)(kernel, q_BLKGd, k_BSKd, v_BSKd, seg_q_BL, seg_kv_BS)
