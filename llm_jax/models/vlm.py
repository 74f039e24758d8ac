"""The vision-language model (family "vlm"): a ViT reads the image, a projector turns its patch features into
decoder tokens, and the decoder-only transformer reads them before the text (LLaVA's layout).

- Vision tower (`vision`): the image (B, S, S, C), values in [0, 1], is cut into P x P patches (model.patch_size),
  each flattened and projected to d_model (`patch_embed`, a linear patch embedding = a P-strided convolution),
  plus a learned position per patch (`pos_embed`), then model.vision_layers bidirectional blocks — the encoder
  family's stack (`encoder.bidirectional_stack`), not a copy — and a final norm. It shares the decoder's width,
  heads and FFN; it never has PEFT adapters (LoRA targets the decoder).
- Projector (`projector`): model.projector = "linear" (one d_model x d_model map) or "mlp" (two layers with a
  GELU, LLaVA-1.5's).
- Decoder (`decoder`): the `Transformer` with the N = (S / P)^2 projected patches as `prefix_BND`: they sit at
  positions 0..N-1 and the text at N.. (rotary positions; causal attention over image and text). The logits are
  the text's (B, L, V), so every objective and the KV-cache decoder see a text model whose positions start at N.

A call without an image (`images_BHWC=None`) runs the text alone at positions N..: that is how each decode step
reads the cache (the image's keys and values were written by the prefill) — training and prefill pass the image.
Initialisation builds the vision tower from a blank image, so one parameter tree holds all three parts.

The guide's recipe (docs/vlm.md): freeze the vision encoder (train.trainable leaves `vision/...` out), train the
projector (and here the decoder, which no pretrained model provides for this vocabulary), then optionally the
decoder with LoRA (model.peft="lora": adapters on the decoder's projections only).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models.config import ModelConfig
from llm_jax.models.encoder import bidirectional_stack
from llm_jax.models.layers import Norm, dense, partitioned
from llm_jax.models.transformer import ACTIVATION_AXES, Transformer

CHANNELS = 3  # RGB


def patches(images_BHWC, patch: int):
    """(B, N, P*P*C) non-overlapping P x P patches in reading order (row by row)."""
    B, H, W, C = images_BHWC.shape
    x = images_BHWC.reshape(B, H // patch, patch, W // patch, patch, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(B, (H // patch) * (W // patch), patch * patch * C)


class VisionTower(nn.Module):
    """ViT: patch embedding + learned positions + the encoder's bidirectional blocks + a final norm."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, images_BHWC, deterministic: bool = True):
        cfg = self.cfg
        x_BNI = patches(images_BHWC.astype(cfg.compute_dtype) * 2.0 - 1.0, cfg.patch_size)  # pixels to [-1, 1]
        B, N, _ = x_BNI.shape
        x_BND = dense(cfg, cfg.d_model, 1, (None, "embed"), ("embed",), "patch_embed")(x_BNI)
        table = self.param("pos_embed", partitioned(nn.initializers.normal(cfg.init_std), (None, "embed")),
                           (cfg.image_tokens, cfg.d_model), cfg.weight_dtype)
        x_BND = x_BND + table[None].astype(cfg.compute_dtype)
        x_BND = nn.with_logical_constraint(x_BND, ACTIVATION_AXES)
        positions_BN = jnp.broadcast_to(jnp.arange(N, dtype=jnp.int32), (B, N))
        x_BND, _ = bidirectional_stack(cfg, deterministic)(x_BND, positions_BN, None, None)
        return Norm(cfg, name="norm_final")(x_BND)


class Projector(nn.Module):
    """Image features -> decoder input embeddings: linear, or two layers with a GELU between."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BND):
        cfg = self.cfg
        if cfg.projector == "mlp":
            x_BND = jax.nn.gelu(dense(cfg, cfg.d_model, 1, ("embed", "mlp"), ("mlp",), "hidden")(x_BND))
            return dense(cfg, cfg.d_model, 1, ("mlp", "embed"), ("embed",), "out")(x_BND)
        return dense(cfg, cfg.d_model, 1, ("embed", "mlp"), ("mlp",), "out")(x_BND)


class VisionLanguageModel(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens_BL, positions_BL=None, segments_BL=None, deterministic: bool = True, *,
                 images_BHWC=None):
        """Text logits (float32, B x L x V) of `tokens_BL` after the image (see the module docstring).
        `positions_BL` are the text's own (0 = the first text token); the decoder reads them after the image."""
        cfg = self.cfg
        B, L = tokens_BL.shape
        if positions_BL is None:
            positions_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        if images_BHWC is None and self.is_initializing():
            images_BHWC = jnp.zeros((B, cfg.image_size, cfg.image_size, CHANNELS), jnp.float32)
        prefix_BND = None
        if images_BHWC is not None:
            expected = (B, cfg.image_size, cfg.image_size, CHANNELS)
            if tuple(images_BHWC.shape) != expected:
                raise ValueError(f"images of shape {tuple(images_BHWC.shape)}; this model reads {expected}")
            vision_cfg = dataclasses.replace(cfg, n_layers=cfg.vision_layers, peft="none")
            features_BND = VisionTower(vision_cfg, name="vision")(images_BHWC, deterministic)
            prefix_BND = Projector(cfg, name="projector")(features_BND)
        return Transformer(cfg, name="decoder")(tokens_BL, positions_BL + cfg.image_tokens, segments_BL,
                                                deterministic, prefix_BND=prefix_BND)
