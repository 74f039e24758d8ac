"""The encoder-only transformer (BERT): embeddings -> N bidirectional blocks (one nn.scan) -> heads.

Embeddings are token + position + token-type (segment A/B) vectors, summed and layer-normed (BERT's embedding
LayerNorm). Blocks are the decoder's `Block` with `causal=False` and a key-padding mask; post-LN (BERT) or pre-LN (then a final norm) by `model.norm_position`. Heads, chosen per call:

- "hidden":   the last hidden states (B, L, D) — Hugging Face BertModel's last_hidden_state;
- "pooled":   tanh(dense(first token)) (B, D) — BertModel's pooler_output;
- "mlm":      masked-LM logits (B, L, V): dense + activation + LayerNorm, then the output projection tied to
              the token embedding plus an output bias — BertForMaskedLM's head;
- "classify": sequence-classification logits (B, num_labels) from the pooled output (model.num_labels > 0).

Initialisation creates every head, so one parameter tree serves all of them (and `param_count` counts it).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models.config import ModelConfig
from llm_jax.models.layers import ACTIVATIONS, Dense, Norm, dense, partitioned
from llm_jax.models.positions import sinusoidal_table
from llm_jax.models.transformer import ACTIVATION_AXES, REMAT_POLICIES, scan_unit

HEADS = ("mlm", "pooled", "hidden", "classify")


def activation(cfg: ModelConfig):
    """The heads' activation: the feed-forward one (SiLU for SwiGLU, which has no single activation)."""
    return ACTIVATIONS.get(cfg.ffn, jax.nn.silu)


def bidirectional_stack(cfg: ModelConfig, deterministic: bool, name: str = "layers"):
    """The encoder's layer stack: the decoder's blocks with causal=False (bidirectional over the real tokens of
    `padding_BL`), cfg.n_layers of them in one nn.scan; called as stack(x_BLD, positions_BL, segments_BL,
    padding_BL) -> (x_BLD, None). Built inside a compact method, it becomes that module's submodule `name` (the
    vlm family's ViT uses it too)."""
    block, extra, length = scan_unit(cfg, causal=False)
    if cfg.remat != "none":
        block = nn.remat(block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
    return nn.scan(
        block, variable_axes={"params": 0, "losses": 0, "intermediates": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=nn.broadcast, length=length, unroll=cfg.scan_unroll,
        metadata_params={nn.PARTITION_NAME: "layers"})(cfg, deterministic, *extra, name=name)


class MLMHead(nn.Module):
    """BertForMaskedLM's head: LayerNorm(act(x W + b)) E^T + bias, E the token embedding (or its own matrix
    when model.tie_embeddings is false)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BLD, embedding_VD):
        cfg = self.cfg
        h_BLD = dense(cfg, cfg.d_model, 1, ("embed", "mlp"), ("mlp",), "transform")(x_BLD)
        h_BLD = Norm(cfg, name="norm")(activation(cfg)(h_BLD))
        if cfg.tie_embeddings:
            logits_BLV = jnp.einsum("bld,vd->blv", h_BLD, embedding_VD.astype(cfg.compute_dtype))
        else:
            logits_BLV = Dense(dataclasses.replace(cfg, use_bias=False), (cfg.vocab_size,), 1, ("embed", "vocab"),
                               ("vocab",), cfg.init_std, name="decoder")(h_BLD)
        if cfg.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros, ("vocab",)), (cfg.vocab_size,),
                              cfg.weight_dtype)
            logits_BLV = logits_BLV + bias.astype(cfg.compute_dtype)
        return logits_BLV


class Encoder(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BL, positions_BL=None, segments_BL=None, deterministic: bool = True, *,
                 token_types_BL=None, padding_BL=None, head: str = "mlm"):
        """The output of `head` (float32) for `tokens_BL`.

        `token_types_BL`: BERT's segment A/B ids (zeros by default); `padding_BL`: True for real tokens (None = all
        real) — padding keys are hidden from attention, so real tokens' outputs ignore what padding holds;
        `segments_BL`: document ids of packed sequences, used when model.document_mask.
        """
        cfg = self.cfg
        if head not in HEADS:
            raise ValueError(f"head={head!r}: must be one of {', '.join(HEADS)}")
        if not cfg.document_mask:
            segments_BL = None
        B, L = tokens_BL.shape
        if positions_BL is None:
            positions_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        init = partitioned(nn.initializers.normal(cfg.init_std), (None, "embed"))
        embed = nn.Embed(
            cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
            embedding_init=partitioned(nn.initializers.normal(cfg.init_std), ("vocab", "embed")), name="embed")
        x_BLD = embed(tokens_BL)
        if cfg.positions == "learned":
            table = self.param("pos_embed", init, (cfg.seq_len, cfg.d_model), cfg.weight_dtype)
            x_BLD = x_BLD + jnp.take(table, positions_BL, axis=0).astype(cfg.compute_dtype)
        elif cfg.positions == "sinusoidal":
            x_BLD = x_BLD * jnp.sqrt(jnp.float32(cfg.d_model)).astype(cfg.compute_dtype)  # as in the decoder
            x_BLD = x_BLD + sinusoidal_table(jnp.arange(L), cfg.d_model)[positions_BL].astype(cfg.compute_dtype)
        if cfg.type_vocab_size:
            types = self.param("type_embed", init, (cfg.type_vocab_size, cfg.d_model), cfg.weight_dtype)
            token_types_BL = jnp.zeros_like(tokens_BL) if token_types_BL is None else token_types_BL
            x_BLD = x_BLD + jnp.take(types, token_types_BL, axis=0).astype(cfg.compute_dtype)
        x_BLD = Norm(cfg, name="norm_embed")(x_BLD)
        x_BLD = nn.Dropout(cfg.dropout, deterministic=deterministic)(x_BLD)
        x_BLD = nn.with_logical_constraint(x_BLD, ACTIVATION_AXES)

        x_BLD, _ = bidirectional_stack(cfg, deterministic)(x_BLD, positions_BL, segments_BL, padding_BL)
        if cfg.norm_position == "pre":
            x_BLD = Norm(cfg, name="norm_final")(x_BLD)

        initializing = self.is_initializing()  # create every head's parameters, whichever head is asked for
        out = {"hidden": x_BLD}
        if head == "mlm" or initializing:
            out["mlm"] = MLMHead(cfg, name="mlm")(x_BLD, embed.embedding)
            out["mlm"] = nn.with_logical_constraint(out["mlm"], ("batch", "length", "vocab"))
        if head in ("pooled", "classify") or initializing:
            pooler = dense(cfg, cfg.d_model, 1, ("embed", "mlp"), ("mlp",), "pooler")
            out["pooled"] = jnp.tanh(pooler(x_BLD[:, 0]))
        if cfg.num_labels and (head == "classify" or initializing):
            pooled_BD = nn.Dropout(cfg.dropout, deterministic=deterministic)(out["pooled"])
            out["classify"] = dense(cfg, cfg.num_labels, 1, ("embed", None), (None,), "classifier")(pooled_BD)
        if head not in out:
            raise ValueError("head='classify' needs a classification head: set model.num_labels > 0")
        return out[head].astype(jnp.float32)
