"""The decoder-only transformer: embeddings -> N blocks (one nn.scan) -> norm -> logits.

Every variant the guide describes is a field of ModelConfig and a small branch here, never another module.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from llm_jax.models.attention import Attention
from llm_jax.models.config import ModelConfig
from llm_jax.models.layers import MLP, Dense, Norm, QuantizedEmbed, partitioned
from llm_jax.models.moe import STATS_COLLECTION, MoE
from llm_jax.models.peft import BottleneckAdapter
from llm_jax.models.positions import sinusoidal_table
from llm_jax.parallel.pipeline import pipeline

ACTIVATION_AXES = ("batch", "length", "embed")

REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,  # keep matmul outputs
}


class Block(nn.Module):
    """Pre-LN: x + Attn(LN(x)), then + FFN(LN(.)). Post-LN: LN(x + Attn(x)), then LN(. + FFN(.)).

    Causal self-attention (decoder), or bidirectional over the real tokens of `padding_BL` (encoder); `window`
    > 0 makes it a local (sliding-window) layer."""

    cfg: ModelConfig
    deterministic: bool
    moe: bool = False    # the feed-forward layer is a mixture of experts
    causal: bool = True
    window: int = 0

    @nn.compact
    def __call__(self, x_BLD, positions_BL, segments_BL, padding_BL=None):
        cfg = self.cfg
        drop = nn.Dropout(cfg.dropout, deterministic=self.deterministic)
        attention = Attention(cfg, causal=self.causal, window=self.window, name="attention")
        attend = lambda x: attention(x, positions_BL, segments_BL, padding_BL)  # noqa: E731
        mlp = MoE(cfg, name="moe") if self.moe else MLP(cfg, name="mlp")
        norm_attn, norm_mlp = Norm(cfg, name="norm_attention"), Norm(cfg, name="norm_mlp")
        if cfg.peft == "adapter":  # bottleneck adapters on each sublayer's output, before the residual sum
            attend_plain, mlp_plain = attend, mlp
            attend = lambda x: BottleneckAdapter(cfg, name="adapter_attn")(attend_plain(x))  # noqa: E731
            mlp = lambda x: BottleneckAdapter(cfg, name="adapter_ffn")(mlp_plain(x))  # noqa: E731
        if cfg.norm_position == "pre":
            x_BLD = x_BLD + drop(attend(norm_attn(x_BLD)))
            x_BLD = x_BLD + drop(mlp(norm_mlp(x_BLD)))
        else:
            x_BLD = norm_attn(x_BLD + drop(attend(x_BLD)))
            x_BLD = norm_mlp(x_BLD + drop(mlp(x_BLD)))
        return nn.with_logical_constraint(x_BLD, ACTIVATION_AXES), None


def unit_layout(cfg: ModelConfig) -> list[tuple[bool, int]]:
    """(MoE feed-forward?, attention window) of each block of the scanned unit. The unit is one block unless
    only every k-th block is MoE (`moe_every`) or only every k-th block is global (`local_global_pattern`);
    then it is the least common multiple of the two, e.g. Gemma 2's (local, global) pair."""
    moe_k = cfg.moe_every if cfg.moe_experts else 1
    pattern = cfg.local_global_pattern if cfg.attention_window else 0
    return [(bool(cfg.moe_experts) and i % moe_k == moe_k - 1,
             0 if pattern and i % pattern == pattern - 1 else cfg.attention_window)
            for i in range(math.lcm(moe_k, pattern or 1))]


class BlockGroup(nn.Module):
    """The scanned unit when blocks differ within a period (`unit_layout`): one Block per entry, named
    block_0, block_1, ...; with a single-block unit the parameter tree has no group level."""

    cfg: ModelConfig
    deterministic: bool
    causal: bool = True

    @nn.compact
    def __call__(self, x_BLD, positions_BL, segments_BL, padding_BL=None):
        for i, (moe, window) in enumerate(unit_layout(self.cfg)):
            x_BLD, _ = Block(self.cfg, self.deterministic, moe=moe, causal=self.causal, window=window,
                             name=f"block_{i}")(x_BLD, positions_BL, segments_BL, padding_BL)
        return x_BLD, None


def scan_unit(cfg: ModelConfig, causal: bool = True):
    """(module class, extra constructor args, repetitions) of the layer stack's scanned unit."""
    layout = unit_layout(cfg)
    if len(layout) == 1:
        return Block, (layout[0][0], causal, layout[0][1]), cfg.n_layers
    return BlockGroup, (causal,), cfg.n_layers // len(layout)


class Transformer(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BL, positions_BL=None, segments_BL=None, deterministic: bool = True, targets_BL=None,
                 values: bool = False, with_values: bool = False, prefix_BND=None):
        """Logits (float32) for `tokens_BL`. `prefix_BND`: embeddings read before the text at positions 0..N-1 (the
        vlm family's image tokens; the caller starts the text's positions after them); the outputs are the text's.
        `segments_BL` (document ids) are used when cfg.document_mask. With
        `targets_BL` and cfg.loss_chunk: the per-position cross-entropy (float32, B x L) instead, computed by
        `chunked_cross_entropy` so the (B, L, V) logits never exist whole. With cfg.value_head and `values`: the
        scalar head's output at every position (float32, B x L) instead — a reward model's score; with
        `with_values`: (logits, values) from one pass (PPO's policy and value on one trunk)."""
        cfg = self.cfg
        if not cfg.document_mask:
            segments_BL = None
        B, L = tokens_BL.shape
        if positions_BL is None:
            positions_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        if cfg.weight_quant != "none":  # int8 rows whatever the projections' format (docs/quantization.md)
            embed = QuantizedEmbed(cfg, name="embed")
        else:
            embed = nn.Embed(
                cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
                embedding_init=partitioned(nn.initializers.normal(cfg.init_std), ("vocab", "embed")), name="embed")
        x_BLD = embed(tokens_BL)
        if cfg.positions == "learned":
            table = self.param("pos_embed", partitioned(nn.initializers.normal(cfg.init_std / 2), (None, "embed")),
                               (cfg.seq_len, cfg.d_model), cfg.weight_dtype)
            x_BLD = x_BLD + jnp.take(table, positions_BL, axis=0).astype(cfg.compute_dtype)
        elif cfg.positions == "sinusoidal":
            # Vaswani et al. scale the token embeddings by sqrt(d_model) before adding the unit-amplitude
            # sinusoids; without it the 0.02-std embeddings are drowned (eval loss 5.46 vs 4.19 learned, ablation).
            x_BLD = x_BLD * jnp.sqrt(jnp.float32(cfg.d_model)).astype(cfg.compute_dtype)
            table_BLD = sinusoidal_table(positions_BL.reshape(-1), cfg.d_model).reshape(B, L, cfg.d_model)
            x_BLD = x_BLD + table_BLD.astype(cfg.compute_dtype)
        N = 0 if prefix_BND is None else prefix_BND.shape[1]
        if N:  # rotary positions only (a table would be indexed by the text's positions): config.py checks it
            x_BLD = jnp.concatenate([prefix_BND.astype(x_BLD.dtype), x_BLD], axis=1)
            positions_BL = jnp.concatenate([jnp.broadcast_to(jnp.arange(N, dtype=jnp.int32), (B, N)),
                                            positions_BL.astype(jnp.int32)], axis=1)
            if segments_BL is not None:
                raise ValueError("prefix_BND with document masks (segments_BL) is not supported")
        x_BLD = nn.Dropout(cfg.dropout, deterministic=deterministic)(x_BLD)
        x_BLD = nn.with_logical_constraint(x_BLD, ACTIVATION_AXES)

        unit, extra, length = scan_unit(cfg)
        block = unit
        if cfg.remat != "none":
            block = nn.remat(unit, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
        # One scanned block: compile time and HLO size do not grow with depth. Collections a block may write
        # (auxiliary losses, sown statistics, the KV cache when decoding) are stacked over layers like the
        # parameters: the cache is (layers, batch, seq_len, kv_heads, head_dim).
        stack = nn.scan(
            block, variable_axes={"params": 0, "losses": 0, STATS_COLLECTION: 0, "intermediates": 0, "cache": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=nn.broadcast, length=length, unroll=cfg.scan_unroll,
            metadata_params={nn.PARTITION_NAME: "layers"})(cfg, deterministic, *extra, name="layers")
        if cfg.pipeline_stages > 1 and not self.is_initializing():
            x_BLD = self._pipelined_layers(block, extra, deterministic, x_BLD, positions_BL, segments_BL)
        else:
            x_BLD, _ = stack(x_BLD, positions_BL, segments_BL)
        x_BLD = x_BLD[:, N:]  # the text's outputs

        self.sow("intermediates", "residual", x_BLD)   # the last block's output (muP coordinate checks)
        if cfg.norm_position == "pre":
            x_BLD = Norm(cfg, name="norm_final")(x_BLD)
        if (values or with_values) and not cfg.value_head:
            raise ValueError("values=True / with_values=True needs a model with model.value_head=true")
        if cfg.value_head:  # a scalar per position from the final hidden state (reward / value models)
            head = Dense(dataclasses.replace(cfg, use_bias=True, peft="none", weight_quant="none"), (1,), 1,
                         ("embed", None), (None,), cfg.init_std, name="value_head")
            values_BL = head(x_BLD)[..., 0].astype(jnp.float32)
            if values and not self.is_initializing():
                return values_BL
        if targets_BL is not None and cfg.loss_chunk and not self.is_initializing():
            params = self.variables["params"]
            weight = params["embed"]["embedding"] if cfg.tie_embeddings else params["head"]["kernel"]
            return chunked_cross_entropy(cfg, x_BLD, weight, targets_BL)
        if cfg.tie_embeddings:
            logits_BLV = embed.attend(x_BLD)
        else:
            head = Dense(dataclasses.replace(cfg, use_bias=False), (cfg.vocab_size,), 1, ("embed", "vocab"),
                         ("vocab",), cfg.init_std, name="head")
            logits_BLV = head(x_BLD)
        if cfg.mup:  # muP's output multiplier: the readout sums width-many correlated terms after training
            logits_BLV = logits_BLV / cfg.width_mult
        logits_BLV = nn.with_logical_constraint(logits_BLV.astype(jnp.float32), ("batch", "length", "vocab"))
        return (logits_BLV, values_BL) if with_values and not self.is_initializing() else logits_BLV

    def _pipelined_layers(self, block, extra, deterministic, x_BLD, positions_BL, segments_BL):
        """The same stacked layer parameters, applied as a pipeline over the `stage` mesh axis."""
        cfg = self.cfg
        layer = block(cfg, deterministic, *extra, parent=None)  # unbound: applied functionally to each layer's slice

        def layer_fn(params, carry):
            x, positions, segments = carry
            used = segments if cfg.document_mask else None
            return layer.apply({"params": params}, x, positions, used)[0], positions, segments

        segments = segments_BL if segments_BL is not None else jnp.zeros(positions_BL.shape, jnp.int32)
        x_BLD, _, _ = pipeline(layer_fn, self.variables["params"]["layers"], (x_BLD, positions_BL, segments),
                               cfg.pipeline_stages, cfg.pipeline_microbatches, cfg.pipeline_repeats)
        return x_BLD


def chunked_cross_entropy(cfg: ModelConfig, x_BLD, weight, targets_BL):
    """Cross-entropy (float32, B x L) of the output head over `cfg.loss_chunk` positions at a time: each chunk's
    (B, C, V) logits are made, used and dropped, and recomputed in the backward pass (`jax.checkpoint`), so
    temporary memory holds one chunk's logits instead of all of them. `weight` is the tied embedding (V, D) or
    the untied head kernel (D, V); the arithmetic is the plain head's (compute dtype, float32 logits, muP's
    output multiplier)."""
    B, L, D = x_BLD.shape
    C = cfg.loss_chunk
    w = weight.astype(cfg.compute_dtype)
    contract = (((2,), (1,)), ((), ())) if cfg.tie_embeddings else (((2,), (0,)), ((), ()))

    @jax.checkpoint
    def chunk(args):
        x_BCD, t_BC = args
        logits_BCV = jax.lax.dot_general(x_BCD.astype(cfg.compute_dtype), w, contract).astype(jnp.float32)
        if cfg.mup:
            logits_BCV = logits_BCV / cfg.width_mult
        logits_BCV = nn.with_logical_constraint(logits_BCV, ("batch", "length", "vocab"))
        return optax.softmax_cross_entropy_with_integer_labels(logits_BCV, t_BC)

    x_NBCD = x_BLD.reshape(B, L // C, C, D).swapaxes(0, 1)
    t_NBC = targets_BL.reshape(B, L // C, C).swapaxes(0, 1)
    return jax.lax.map(chunk, (x_NBCD, t_NBC)).swapaxes(0, 1).reshape(B, L)
