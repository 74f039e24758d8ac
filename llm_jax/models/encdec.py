"""The encoder-decoder transformer (T5): a bidirectional encoder stack and a causal decoder stack that also
attends to the encoder output (cross-attention), sharing one token embedding.

Each stack is one scanned block, like the decoder-only model. Positions: T5's bucketed relative position bias
(`model.positions="relative"`: a (buckets, heads) table per stack, computed once and added to every layer's
self-attention scores; cross-attention has none) or any of the decoder's options (learned / sinusoidal tables
per stack, RoPE inside self-attention, none). T5 v1.1 is `norm="rmsnorm"`, `use_bias=False`, `ffn="geglu"`,
pre-LN; the original T5 has a ReLU FFN and a tied head whose input is scaled by d_model^-0.5
(`interop/t5.py` folds that scale, and T5's unscaled attention, into the converted weights).

`__call__(tokens_BL, ..., decoder_tokens_BT=..., padding_BL=..., decoder_padding_BT=...)` returns the decoder's
logits (B, T, V); `encode` and `decode` are the two halves (a generation loop encodes once).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from llm_jax.models.attention import Attention
from llm_jax.models.config import ModelConfig
from llm_jax.models.layers import MLP, Dense, Norm, partitioned
from llm_jax.models.positions import relative_position_bucket, sinusoidal_table
from llm_jax.models.transformer import ACTIVATION_AXES, REMAT_POLICIES


class EncDecBlock(nn.Module):
    """Self-attention (+ cross-attention in the decoder) + FFN, each pre-LN (T5) or post-LN."""

    cfg: ModelConfig
    deterministic: bool
    decoder: bool

    @nn.compact
    def __call__(self, x_BLD, positions_BL, padding_BL, bias_BHLS, memory_BSD, memory_padding_BS):
        cfg = self.cfg
        drop = nn.Dropout(cfg.dropout, deterministic=self.deterministic)
        sublayers = [(Norm(cfg, name="norm_attention"), lambda h: Attention(cfg, causal=self.decoder, name="attention")(
            h, positions_BL, None, padding_BL, bias_BHLS=bias_BHLS))]
        if self.decoder:
            sublayers.append((Norm(cfg, name="norm_cross"), lambda h: Attention(cfg, causal=False, name="cross")(
                h, positions_BL, None, memory_padding_BS, kv_BSD=memory_BSD)))
        sublayers.append((Norm(cfg, name="norm_mlp"), MLP(cfg, name="mlp")))
        for norm, layer in sublayers:
            x_BLD = x_BLD + drop(layer(norm(x_BLD))) if cfg.norm_position == "pre" else norm(x_BLD + drop(layer(x_BLD)))
        return nn.with_logical_constraint(x_BLD, ACTIVATION_AXES), None


class Stack(nn.Module):
    """Positions, N scanned blocks, final norm: the encoder (decoder=False) or the decoder."""

    cfg: ModelConfig
    decoder: bool

    @nn.compact
    def __call__(self, x_BLD, padding_BL, memory_BSD=None, memory_padding_BS=None, deterministic: bool = True):
        cfg = self.cfg
        B, L, _ = x_BLD.shape
        positions_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        bias_BHLS = None
        if cfg.positions == "relative":
            table = self.param("relative_bias", partitioned(nn.initializers.normal(cfg.init_std), (None, "heads")),
                               (cfg.rel_buckets, cfg.n_heads), cfg.weight_dtype)
            offsets_LS = jnp.arange(L)[None, :] - jnp.arange(L)[:, None]  # key position - query position
            buckets_LS = relative_position_bucket(offsets_LS, not self.decoder, cfg.rel_buckets, cfg.rel_max_distance)
            bias_BHLS = jnp.take(table, buckets_LS, axis=0).transpose(2, 0, 1)[None].astype(jnp.float32)
        elif cfg.positions == "learned":
            table = self.param("pos_embed", partitioned(nn.initializers.normal(cfg.init_std / 2), (None, "embed")),
                               (cfg.seq_len, cfg.d_model), cfg.weight_dtype)
            x_BLD = x_BLD + table[:L].astype(cfg.compute_dtype)
        elif cfg.positions == "sinusoidal":
            x_BLD = x_BLD * jnp.sqrt(jnp.float32(cfg.d_model)).astype(cfg.compute_dtype)
            x_BLD = x_BLD + sinusoidal_table(jnp.arange(L), cfg.d_model).astype(cfg.compute_dtype)
        x_BLD = nn.Dropout(cfg.dropout, deterministic=deterministic)(x_BLD)
        block = EncDecBlock
        if cfg.remat != "none":
            block = nn.remat(EncDecBlock, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
        stack = nn.scan(
            block, variable_axes={"params": 0, "losses": 0, "stats": 0, "intermediates": 0},
            split_rngs={"params": True, "dropout": True}, in_axes=nn.broadcast, length=cfg.n_layers,
            unroll=cfg.scan_unroll, metadata_params={nn.PARTITION_NAME: "layers"})(
                cfg, deterministic, self.decoder, name="layers")
        x_BLD, _ = stack(x_BLD, positions_BL, padding_BL, bias_BHLS, memory_BSD, memory_padding_BS)
        if cfg.norm_position == "pre":
            x_BLD = Norm(cfg, name="norm_final")(x_BLD)
        return nn.with_logical_constraint(x_BLD, ACTIVATION_AXES)


class EncoderDecoder(nn.Module):
    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        self.embed = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
            embedding_init=partitioned(nn.initializers.normal(cfg.init_std), ("vocab", "embed")))
        self.encoder = Stack(cfg, decoder=False)
        self.decoder = Stack(cfg, decoder=True)
        if not cfg.tie_embeddings:
            self.head = Dense(dataclasses.replace(cfg, use_bias=False), (cfg.vocab_size,), 1, ("embed", "vocab"),
                              ("vocab",), cfg.init_std)

    def encode(self, tokens_BL, padding_BL=None, deterministic: bool = True):
        """The encoder output (B, L, D); `padding_BL` True for real tokens (None = all real)."""
        x_BLD = nn.with_logical_constraint(self.embed(tokens_BL), ACTIVATION_AXES)
        return self.encoder(x_BLD, padding_BL, deterministic=deterministic)

    def decode(self, decoder_tokens_BT, memory_BSD, padding_BS=None, deterministic: bool = True):
        """Logits (float32, B, T, V) of the decoder reading `decoder_tokens_BT` (targets shifted right)."""
        x_BTD = nn.with_logical_constraint(self.embed(decoder_tokens_BT), ACTIVATION_AXES)
        x_BTD = self.decoder(x_BTD, None, memory_BSD, padding_BS, deterministic=deterministic)
        logits_BTV = self.embed.attend(x_BTD) if self.cfg.tie_embeddings else self.head(x_BTD)
        return nn.with_logical_constraint(logits_BTV.astype(jnp.float32), ("batch", "length", "vocab"))

    def __call__(self, tokens_BL, positions_BL=None, segments_BL=None, deterministic: bool = True, *,
                 decoder_tokens_BT=None, padding_BL=None):
        """Decoder logits for encoder input `tokens_BL` and decoder input `decoder_tokens_BT` (default: the
        encoder input itself, which is what initialisation uses). Positions are each stack's own 0..L-1."""
        memory_BSD = self.encode(tokens_BL, padding_BL, deterministic)
        decoder_tokens_BT = tokens_BL if decoder_tokens_BT is None else decoder_tokens_BT
        return self.decode(decoder_tokens_BT, memory_BSD, padding_BL, deterministic)
