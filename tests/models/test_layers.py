import math

import flax.linen as nn
import jax
import numpy as np
import pytest

from helpers import small_config
from llm_jax.models.config import ModelConfig
from llm_jax.models.layers import MLP, Norm


def model_cfg(**kw):
    return ModelConfig.from_config(small_config(**kw).model)


def test_layernorm_matches_the_guide():
    x = np.random.RandomState(0).randn(2, 3, 32).astype(np.float32) * 3 + 1
    norm = Norm(model_cfg(norm="layernorm"))
    params = {"scale": np.linspace(0.5, 2, 32, dtype=np.float32), "bias": np.linspace(-1, 1, 32, dtype=np.float32)}
    out = np.asarray(norm.apply({"params": params}, x))
    mu, sigma = x.mean(-1, keepdims=True), np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, params["scale"] * (x - mu) / sigma + params["bias"], atol=1e-5)


def test_rmsnorm_matches_the_guide():
    x = np.random.RandomState(0).randn(2, 3, 32).astype(np.float32) * 3 + 1
    norm = Norm(model_cfg(norm="rmsnorm", use_bias=False))
    scale = np.linspace(0.5, 2, 32, dtype=np.float32)
    out = np.asarray(norm.apply({"params": {"scale": scale}}, x))
    np.testing.assert_allclose(out, x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-5) * scale, atol=1e-5)


@pytest.mark.parametrize("ffn", ["relu", "gelu", "gelu_tanh", "swiglu"])
def test_mlp_matches_its_formula(ffn):
    cfg = model_cfg(ffn=ffn, use_bias=False)
    x = np.random.RandomState(0).randn(1, 4, 32).astype(np.float32)
    mlp = MLP(cfg)
    params = jax.tree.map(np.asarray, nn.unbox(jax.jit(mlp.init)(jax.random.key(0), x)["params"]))
    out = np.asarray(mlp.apply({"params": params}, x))
    gelu = lambda z: 0.5 * z * (1 + np.vectorize(math.erf)(z / np.sqrt(2)))  # x * Phi(x)
    if ffn == "swiglu":
        g, u = x @ params["wi_gate"]["kernel"], x @ params["wi_up"]["kernel"]
        h = g / (1 + np.exp(-g)) * u
    else:
        z = x @ params["wi"]["kernel"]
        h = {"relu": lambda z: np.maximum(z, 0), "gelu": gelu,
             "gelu_tanh": lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))}[ffn](z)
    np.testing.assert_allclose(out, h @ params["wo"]["kernel"], atol=1e-5)
