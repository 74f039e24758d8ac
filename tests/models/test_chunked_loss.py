"""model.loss_chunk: the output head fused with the cross-entropy a chunk of positions at a time equals the plain
head + loss, value and gradients (the memory it saves is measured by `llm-jax compile`, docs/performance.md)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax.config import ConfigError
from llm_jax.models import build_model
from llm_jax.objectives.causal_lm import causal_lm_losses


@pytest.mark.parametrize("shape", [dict(tie_embeddings=True), dict(tie_embeddings=False, use_bias=False),
                                   dict(mup=True, mup_base_width=16)])
def test_chunked_cross_entropy_equals_the_plain_loss_and_gradients(shape):
    plain = build_model(small_config(vocab_size=512, seq_len=32, **shape).model)
    chunked = build_model(small_config(vocab_size=512, seq_len=32, loss_chunk=8, **shape).model)
    params = nn.unbox(plain.init(jax.random.key(0), jnp.zeros((2, 32), jnp.int32))["params"])
    rng = np.random.RandomState(0)
    batch = {"inputs": jnp.asarray(rng.randint(0, 512, (4, 32))), "targets": jnp.asarray(rng.randint(0, 512, (4, 32))),
             "weights": jnp.asarray(rng.rand(4, 32) > 0.2, jnp.float32)}

    def loss(model, p):
        losses, weights, _ = causal_lm_losses(model, p, batch, None, True)
        return jnp.sum(losses * weights) / jnp.sum(weights)

    a, grads_a = jax.value_and_grad(lambda p: loss(plain, p))(params)
    b, grads_b = jax.value_and_grad(lambda p: loss(chunked, p))(params)
    assert abs(float(a) - float(b)) < 1e-6
    for x, y in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


@pytest.mark.parametrize("overrides, message", [(dict(loss_chunk=5), "a divisor of model.seq_len=32"),
                                                (dict(loss_chunk=8, family="encoder"), "causal_lm objective only")])
def test_bad_loss_chunks_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small_config("mlm" if overrides.get("family") == "encoder" else "causal_lm", vocab_size=512, seq_len=32,
                     **overrides)
