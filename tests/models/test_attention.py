import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax.models.attention import Attention
from llm_jax.models import build_model
from llm_jax.models.config import ModelConfig


def reference_attention(x, p, n_heads, n_kv):
    """softmax(Q K^T / sqrt(d_k) + M) V written out with numpy, K/V heads repeated for GQA/MQA."""
    q = np.einsum("bld,dhk->blhk", x, p["query"]["kernel"])
    k = np.einsum("bld,dhk->blhk", x, p["key"]["kernel"])
    v = np.einsum("bld,dhk->blhk", x, p["value"]["kernel"])
    k, v = np.repeat(k, n_heads // n_kv, axis=2), np.repeat(v, n_heads // n_kv, axis=2)
    L, dk = x.shape[1], q.shape[-1]
    s = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(dk)
    s = s + np.where(np.tril(np.ones((L, L))) == 1, 0.0, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a = a / a.sum(-1, keepdims=True)
    o = np.einsum("bhqs,bshk->bqhk", a, v)
    return np.einsum("bqhk,hkd->bqd", o, p["out"]["kernel"])


@pytest.mark.parametrize("n_kv", [4, 2, 1])  # MHA, GQA, MQA
def test_attention_matches_reference(n_kv):
    cfg = ModelConfig.from_config(small_config(n_kv_heads=n_kv, use_bias=False, positions="learned").model)
    x = np.random.RandomState(0).randn(2, 6, 32).astype(np.float32)
    positions = np.broadcast_to(np.arange(6), (2, 6))
    module = Attention(cfg)
    params = nn.unbox(jax.jit(module.init)(jax.random.key(0), x, positions)["params"])
    assert params["key"]["kernel"].shape == (32, n_kv, 8)
    out = np.asarray(jax.jit(module.apply)({"params": params}, x, positions))
    expected = reference_attention(x, jax.tree.map(np.asarray, params), 4, n_kv)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_document_mask_keeps_attention_inside_each_document():
    import jax.numpy as jnp
    cfg = small_config(document_mask=True, positions="rope")
    model = build_model(cfg.model)
    tokens = jax.random.randint(jax.random.key(0), (1, 16), 0, 256)
    segments = jnp.asarray([[1] * 6 + [2] * 10])
    params = jax.jit(model.init)(jax.random.key(1), tokens)["params"]
    apply = jax.jit(lambda p, t: model.apply({"params": p}, t, segments_BL=segments))
    base = apply(params, tokens)
    changed = tokens.at[0, :6].set((tokens[0, :6] + 5) % 256)  # rewrite the whole first document
    out = apply(params, changed)
    np.testing.assert_array_equal(np.asarray(out[0, 6:]), np.asarray(base[0, 6:]))  # document 2 unaffected
    assert not np.allclose(out[0, :6], base[0, :6])
    unmasked = build_model(small_config(positions="rope").model)
    free = jax.jit(lambda p, t: unmasked.apply({"params": p}, t, segments_BL=segments))
    assert not np.allclose(free(params, changed)[0, 6:], free(params, tokens)[0, 6:])  # the option matters
