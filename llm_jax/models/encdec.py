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

Decoding with a cache (`infer/seq2seq.py`; `cache` collection mutable): the decoder's self-attention uses the
decoder-only model's slot = position KV cache (`decode(..., positions_BT=...)`; the relative bias is then over
(query positions, every slot)), and each cross-attention layer keeps the keys and values it computed from the
encoder output on the first call, with the encoder's padding mask, so a decode step passes no encoder output.
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
            sublayers.append((Norm(cfg, name="norm_cross"), lambda h: Attention(
                cfg, causal=False, cross=True, name="cross")(h, positions_BL, None, memory_padding_BS,
                                                              kv_BSD=memory_BSD)))
        sublayers.append((Norm(cfg, name="norm_mlp"), MLP(cfg, name="mlp")))
        for norm, layer in sublayers:
            x_BLD = x_BLD + drop(layer(norm(x_BLD))) if cfg.norm_position == "pre" else norm(x_BLD + drop(layer(x_BLD)))
        return nn.with_logical_constraint(x_BLD, ACTIVATION_AXES), None


class Stack(nn.Module):
    """Positions, N scanned blocks, final norm: the encoder (decoder=False) or the decoder. `positions_BL`: the
    tokens' positions (default 0..L-1; a decode step's are where the cache has got to)."""

    cfg: ModelConfig
    decoder: bool

    @nn.compact
    def __call__(self, x_BLD, padding_BL, memory_BSD=None, memory_padding_BS=None, deterministic: bool = True,
                 positions_BL=None):
        cfg = self.cfg
        B, L, _ = x_BLD.shape
        query_BL = jnp.arange(L, dtype=jnp.int32)[None] if positions_BL is None else positions_BL  # (1 or B, L)
        bias_BHLS = None
        if cfg.positions == "relative":
            table = self.param("relative_bias", partitioned(nn.initializers.normal(cfg.init_std), (None, "heads")),
                               (cfg.rel_buckets, cfg.n_heads), cfg.weight_dtype)
            # keys: this call's tokens, or every slot of the decoder's KV cache (slot = position)
            S = self._cache_slots() if self.decoder and self.is_mutable_collection("cache") else L
            offsets_BLS = jnp.arange(S)[None, None, :] - query_BL[:, :, None]  # key position - query position
            buckets_BLS = relative_position_bucket(offsets_BLS, not self.decoder, cfg.rel_buckets,
                                                   cfg.rel_max_distance)
            bias_BHLS = jnp.take(table, buckets_BLS, axis=0).transpose(0, 3, 1, 2).astype(jnp.float32)
        elif cfg.positions == "learned":
            table = self.param("pos_embed", partitioned(nn.initializers.normal(cfg.init_std / 2), (None, "embed")),
                               (cfg.seq_len, cfg.d_model), cfg.weight_dtype)
            x_BLD = x_BLD + jnp.take(table, query_BL, axis=0).astype(cfg.compute_dtype)
        elif cfg.positions == "sinusoidal":
            x_BLD = x_BLD * jnp.sqrt(jnp.float32(cfg.d_model)).astype(cfg.compute_dtype)
            x_BLD = x_BLD + sinusoidal_table(query_BL.reshape(-1), cfg.d_model).reshape(
                query_BL.shape + (cfg.d_model,)).astype(cfg.compute_dtype)
        positions_BL = jnp.broadcast_to(query_BL, (B, L))
        x_BLD = nn.Dropout(cfg.dropout, deterministic=deterministic)(x_BLD)
        block = EncDecBlock
        if cfg.remat != "none":
            block = nn.remat(EncDecBlock, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
        stack = nn.scan(
            block, variable_axes={"params": 0, "losses": 0, "stats": 0, "intermediates": 0, "cache": 0},
            split_rngs={"params": True, "dropout": True}, in_axes=nn.broadcast, length=cfg.n_layers,
            unroll=cfg.scan_unroll, metadata_params={nn.PARTITION_NAME: "layers"})(
                cfg, deterministic, self.decoder, name="layers")
        x_BLD, _ = stack(x_BLD, positions_BL, padding_BL, bias_BHLS, memory_BSD, memory_padding_BS)
        if cfg.norm_position == "pre":
            x_BLD = Norm(cfg, name="norm_final")(x_BLD)
        return nn.with_logical_constraint(x_BLD, ACTIVATION_AXES)

    def _cache_slots(self) -> int:
        """Slots of the decoder's self-attention cache: the caller's, else the model.seq_len the first call makes."""
        leaf = self.variables.get("cache", {}).get("layers", {}).get("attention", {}).get("cached_key")
        return self.cfg.seq_len if leaf is None else leaf.shape[2]  # (layers, batch, slots, kv_heads, head_dim)


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

    def decode(self, decoder_tokens_BT, memory_BSD=None, padding_BS=None, deterministic: bool = True, *,
               positions_BT=None):
        """Logits (float32, B, T, V) of the decoder reading `decoder_tokens_BT` (targets shifted right) at
        `positions_BT` (default 0..T-1). With a mutable `cache`, `memory_BSD` is needed on the first call only."""
        x_BTD = nn.with_logical_constraint(self.embed(decoder_tokens_BT), ACTIVATION_AXES)
        x_BTD = self.decoder(x_BTD, None, memory_BSD, padding_BS, deterministic=deterministic,
                             positions_BL=positions_BT)
        logits_BTV = self.embed.attend(x_BTD) if self.cfg.tie_embeddings else self.head(x_BTD)
        return nn.with_logical_constraint(logits_BTV.astype(jnp.float32), ("batch", "length", "vocab"))

    def __call__(self, tokens_BL, positions_BL=None, segments_BL=None, deterministic: bool = True, *,
                 decoder_tokens_BT=None, padding_BL=None):
        """Decoder logits for encoder input `tokens_BL` and decoder input `decoder_tokens_BT` (default: the
        encoder input itself, which is what initialisation uses). Positions are each stack's own 0..L-1."""
        memory_BSD = self.encode(tokens_BL, padding_BL, deterministic)
        decoder_tokens_BT = tokens_BL if decoder_tokens_BT is None else decoder_tokens_BT
        return self.decode(decoder_tokens_BT, memory_BSD, padding_BL, deterministic)
