"""Model families behind one builder: `build_model(cfg.model)` returns the linen module the config describes.

A family is a module class taking a `ModelConfig`, registered in FAMILIES under the `model.family` name; every
caller (training, inference, conversion, estimates, tests) goes through `build_model`, never a class directly.
"""

from __future__ import annotations

import flax.linen as nn

from llm_jax.models.config import ModelConfig
from llm_jax.models.encdec import EncoderDecoder
from llm_jax.models.encoder import Encoder
from llm_jax.models.transformer import Transformer
from llm_jax.models.vlm import VisionLanguageModel

FAMILIES: dict[str, type[nn.Module]] = {
    "decoder": Transformer,   # decoder-only (GPT, Llama)
    "encoder": Encoder,       # encoder-only (BERT)
    "encdec": EncoderDecoder,  # encoder-decoder (T5)
    "vlm": VisionLanguageModel,  # ViT + projector + decoder (LLaVA-style)
}


def build_model(model_cfg, mesh_cfg=None) -> nn.Module:
    """The module of a resolved `cfg.model` (with `cfg.mesh` when training, for the pipeline layout)."""
    view = ModelConfig.from_config(model_cfg, mesh_cfg)
    return FAMILIES[view.family](view)


__all__ = ["FAMILIES", "ModelConfig", "build_model"]
