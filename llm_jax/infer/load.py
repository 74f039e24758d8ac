"""Loads a work directory (config.json + tokenizer + latest checkpoint) for sampling and evaluation."""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax import config as config_lib
from llm_jax.data.tokenizers import load_tokenizer
from llm_jax.models.config import ModelConfig
from llm_jax.models.transformer import Transformer
from llm_jax.train import checkpoint


class WorkdirError(ValueError):
    """The work directory is missing something a command needs."""


@dataclasses.dataclass
class LoadedModel:
    cfg: object
    model: Transformer
    params: dict
    tokenizer: object
    step: int


def abstract_params(model: Transformer, seq_len: int, device=None):
    sharding = jax.sharding.SingleDeviceSharding(device or jax.devices()[0])
    shapes = jax.eval_shape(lambda r: nn.unbox(model.init(r, jnp.zeros((1, seq_len), jnp.int32))["params"]),
                            jax.random.key(0))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def read_config(workdir: str):
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise WorkdirError(f"{workdir!r} is not a work directory: it has no config.json")
    with open(path) as f:
        return config_lib.config_from_json(f.read())


def load_workdir(workdir: str, step: int | None = None) -> LoadedModel:
    """Config, model, parameters (on one device) and tokenizer of a trained or converted work directory."""
    cfg = read_config(workdir)
    model = Transformer(ModelConfig.from_config(cfg.model))
    if not os.path.isdir(checkpoint.checkpoint_dir(workdir)):
        raise WorkdirError(f"{workdir!r} has no checkpoints/ directory: train or convert a model into it first")
    try:
        params, step = checkpoint.restore_params(workdir, abstract_params(model, cfg.model.seq_len), step)
    except FileNotFoundError as e:
        raise WorkdirError(str(e)) from e
    return LoadedModel(cfg, model, params, load_tokenizer(workdir), step)
