"""A quantized model: the Dense hook computes exactly the float model with dequantized weights, its logits stay
close to the float model's, the KV-cache decode works on it, its parameters carry logical axis names, and the
config refuses what it cannot do."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax import config as config_lib
from llm_jax.infer.decode import generate
from llm_jax.infer.load import abstract_params
from llm_jax.models import build_model
from llm_jax.models import quant_formats as formats
from llm_jax.quant.command import quantize_params

GROUP = 16
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 32)), jnp.int32)


@pytest.fixture(scope="module")
def float_model():
    """A Llama-like small model (RoPE, SwiGLU, RMSNorm, no biases, tied embedding): (config, model, params)."""
    cfg = small_config(seq_len=32, positions="rope", ffn="swiglu", norm="rmsnorm", use_bias=False)
    model = build_model(cfg.model)
    return cfg, model, jax.device_get(nn.unbox(model.init(jax.random.key(0), TOKENS)["params"]))


def _quantized(cfg, params, method):
    qcfg = cfg.copy_and_resolve_references()
    qcfg.model.weight_quant, qcfg.model.quant_group_size = method, GROUP
    config_lib.validate(qcfg)
    model = build_model(qcfg.model)
    return model, quantize_params(params, abstract_params(model, 32), method, GROUP, log=lambda _: None)


def _dequantized_float_params(params, qparams, method):
    """The float tree with every quantized kernel replaced by what its parts store (a reference built here)."""
    out = jax.tree.map(lambda x: x, params)
    e = qparams["embed"]
    out["embed"]["embedding"] = np.asarray(e["embedding_q"], np.float32) * np.asarray(e["embedding_scale"])[:, None]
    for name, dense in [(("attention", k), v) for k, v in params["layers"]["attention"].items()] + \
                       [(("mlp", k), v) for k, v in params["layers"]["mlp"].items()]:
        q = qparams["layers"][name[0]][name[1]]
        parts = {p: q[f"kernel_{p}"] for p in formats.PARTS[method]}
        kernel = dense["kernel"]
        layers = [formats.dequantize(method, {p: v[i] for p, v in parts.items()}) for i in range(kernel.shape[0])]
        out["layers"][name[0]][name[1]]["kernel"] = np.stack([np.asarray(w) for w in layers]).reshape(kernel.shape)
    return out


@pytest.mark.parametrize("method,tolerance", [("int8", 0.02), ("int4", 0.25), ("nf4", 0.25)])
def test_quantized_logits_are_the_dequantized_models_and_close_to_float(float_model, method, tolerance):
    cfg, model, params = float_model
    qmodel, qparams = _quantized(cfg, params, method)
    logits = np.asarray(model.apply({"params": params}, TOKENS))
    qlogits = np.asarray(qmodel.apply({"params": qparams}, TOKENS))
    reference = np.asarray(model.apply({"params": _dequantized_float_params(params, qparams, method)}, TOKENS))
    np.testing.assert_allclose(qlogits, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    error = np.abs(qlogits - logits).max() / np.abs(logits).max()
    assert error < tolerance, error
    assert np.mean(qlogits.argmax(-1) == logits.argmax(-1)) > (0.9 if method == "int8" else 0.5)


def test_the_kv_cache_decode_runs_on_quantized_weights(float_model):
    cfg, _, params = float_model
    qmodel, qparams = _quantized(cfg, params, "int4")
    qparams = jax.tree.map(lambda x: x * 4 if x.dtype == np.float32 and x.ndim > 1 else x, qparams)  # sharper
    prompt = [5, 17, 42]
    new = generate(qmodel, qparams, [prompt], 8, 32).new_ids[0]
    # greedy with the cache = the argmax at every position of one forward without it (causal)
    logits = qmodel.apply({"params": qparams}, jnp.asarray([prompt + new]))
    assert new == [int(t) for t in jnp.argmax(logits[0, len(prompt) - 1:-1], axis=-1)]


def test_quantized_parameters_carry_the_kernels_logical_axes():
    cfg = small_config(weight_quant="int4", quant_group_size=GROUP)
    model = build_model(cfg.model)
    boxed = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 16), jnp.int32)), jax.random.key(0))["params"]
    names = jax.tree.map(lambda x: x.names, boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert names["layers"]["attention"]["query"]["kernel_q"] == ("layers", "embed", "heads", "head_dim")
    assert names["layers"]["attention"]["out"]["kernel_scale"] == ("layers", "heads", "embed")
    assert names["layers"]["mlp"]["wo"]["kernel_offset"] == ("layers", "mlp", "embed")
    assert names["embed"] == {"embedding_q": ("vocab", "embed"), "embedding_scale": ("vocab",)}
    int8 = build_model(small_config(weight_quant="int8").model)
    boxed = jax.eval_shape(lambda r: int8.init(r, jnp.zeros((1, 16), jnp.int32)), jax.random.key(0))["params"]
    assert boxed["layers"]["mlp"]["wi"]["kernel_scale"].names == ("layers", "mlp")


def test_the_config_refuses_what_quantization_cannot_do():
    assert config_lib.CHOICES["model.weight_quant"] == ("none",) + formats.METHODS
    with pytest.raises(config_lib.ConfigError, match="model.weight_quant='int5': must be one of"):
        small_config(weight_quant="int5")
    with pytest.raises(config_lib.ConfigError, match=r"group_size=24 must divide .*model.d_model=32.*dividing 32"):
        small_config(weight_quant="nf4", quant_group_size=24)
    with pytest.raises(config_lib.ConfigError, match="must be an even integer"):
        small_config(weight_quant="int4", quant_group_size=1)
    with pytest.raises(config_lib.ConfigError, match="dense decoder only"):
        small_config(weight_quant="int8", moe_experts=4)
    small_config(weight_quant="int8", quant_group_size=24)  # int8 has no groups
