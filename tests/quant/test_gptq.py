"""GPTQ: smaller layer-output error than round-to-nearest on correlated inputs (with and without act-order), its
codes are what the int4 format stores, and the calibration Grams are each projection's x^T x."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax.models import build_model
from llm_jax.models import quant_formats as formats
from llm_jax.quant import gptq


@pytest.fixture(scope="module")
def layer():
    """A (64, 24) weight and the Gram of 512 correlated inputs (a low-rank mix plus noise, as activations are)."""
    rng = np.random.default_rng(0)
    x_NI = rng.normal(size=(512, 8)) @ rng.normal(size=(8, 64)) + 0.3 * rng.normal(size=(512, 64))
    x_NI[:, 5] *= 6  # an outlier input feature
    return rng.normal(0, 0.05, (64, 24)).astype(np.float32), x_NI.T @ x_NI


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_has_a_smaller_output_error_than_round_to_nearest(layer, act_order):
    w_IO, gram_II = layer
    rtn_IO = np.asarray(formats.dequantize("int4", formats.quantize("int4", w_IO, 16)))
    parts, w_hat_IO = gptq.gptq_int4(w_IO, gram_II, 16, act_order=act_order)
    rtn, ours = gptq.output_error(w_IO, rtn_IO, gram_II), gptq.output_error(w_IO, w_hat_IO, gram_II)
    assert ours < 0.7 * rtn, (ours, rtn)
    assert np.abs(w_hat_IO - w_IO).max() > np.abs(rtn_IO - w_IO).max()  # it trades weight error for output error


def test_gptq_codes_are_int4_format_parts(layer):
    w_IO, gram_II = layer
    parts, w_hat_IO = gptq.gptq_int4(w_IO, gram_II, 16, block=32)
    shapes = formats.part_shapes("int4", 64, (24,), 16)
    assert {k: (v.shape, v.dtype) for k, v in parts.items()} == {k: (s, np.dtype(d)) for k, (s, d) in shapes.items()}
    np.testing.assert_allclose(np.asarray(formats.dequantize("int4", parts)), w_hat_IO, rtol=0, atol=0)
    # with an identity Hessian (uncorrelated, equal inputs) no error moves anywhere useful: GPTQ = round-to-nearest
    plain, _ = gptq.gptq_int4(w_IO, np.eye(64), 16)
    rtn = formats.quantize("int4", w_IO, 16)
    for key in parts:
        np.testing.assert_allclose(np.asarray(plain[key]), np.asarray(rtn[key]), rtol=1e-6)


def test_the_numpy_rounding_matches_the_formats():
    rng = np.random.default_rng(2)
    w, scale = rng.normal(size=500).astype(np.float32), rng.uniform(0.01, 0.1, 500).astype(np.float32)
    offset = (rng.normal(size=500) * 0.3).astype(np.float32)
    scale[:2], offset[:2], w[:2] = 0.0625, 0.25, [0.25 + 2.5 * 0.0625, 0.25 + 3.5 * 0.0625]  # exact ties
    codes = gptq._int4_codes(w, scale, offset)
    np.testing.assert_array_equal(codes, np.asarray(formats.int4_codes(w, scale, offset)))
    assert list(codes[:2]) == [2, 4]  # half to even


def test_input_grams_are_each_projections_input_gram():
    cfg = small_config(positions="rope")
    model = build_model(cfg.model)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"])
    tokens = np.random.default_rng(0).integers(0, 256, (4, 16))
    grams = gptq.input_grams(model, params, tokens, batch=2)
    assert set(grams) == {("layers", "attention", n) for n in ("query", "key", "value", "out")} | {
        ("layers", "mlp", "wi"), ("layers", "mlp", "wo")}
    assert grams[("layers", "mlp", "wo")].shape == (2, 128, 128)
    np.testing.assert_allclose(grams[("layers", "attention", "query")], grams[("layers", "attention", "key")])
    # the first layer's query input is the normed embedding
    capture = jax.jit(lambda p, t: model.apply({"params": p}, t, mutable=["intermediates"],
                                               capture_intermediates=lambda m, _: type(m).__name__ == "Norm")[1])
    state = capture(params, jnp.asarray(tokens))
    x = np.asarray(state["intermediates"]["layers"]["norm_attention"]["__call__"][0][0], np.float64).reshape(-1, 32)
    np.testing.assert_allclose(grams[("layers", "attention", "query")][0], x.T @ x, rtol=1e-4, atol=1e-4)
