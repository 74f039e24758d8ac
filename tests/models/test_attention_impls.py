"""The attention implementations compute one function: masks written out by hand, blockwise vs xla (forward and
gradients) for every mask with GQA/MQA, the tile ranges against brute force, the memory the blockwise path saves,
`auto`'s choices, and sliding-window / local-global layers in whole models."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax.models import build_model
from llm_jax.models import attention as attention_lib
from llm_jax.models.attention import choose_impl, xla_attention
from llm_jax.models.blockwise import blockwise_attention
from llm_jax.models.masks import MaskArrays, MaskSpec, key_block_range, query_block_range, visible


def _mask(spec, arrays=MaskArrays(), L=6):
    return np.asarray(visible(spec, arrays, jnp.arange(L), jnp.arange(L)))[0].astype(int)


def test_mask_patterns_written_out():
    np.testing.assert_array_equal(_mask(MaskSpec()), np.tril(np.ones((6, 6), int)))
    band = np.array([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                     [0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(_mask(MaskSpec(window=3)), band)  # itself and the 2 before
    np.testing.assert_array_equal(_mask(MaskSpec(causal=False, window=2)),
                                  (np.abs(np.subtract.outer(np.arange(6), np.arange(6))) < 2).astype(int))
    strided = _mask(MaskSpec(stride=2))  # distance < 2 or even
    assert strided[5].tolist() == [0, 1, 0, 1, 1, 1] and strided[4].tolist() == [1, 0, 1, 1, 1, 0]
    glob = _mask(MaskSpec(window=1, global_tokens=1))  # itself, plus token 0 both ways (causally)
    assert glob[:, 0].tolist() == [1] * 6 and glob[3].tolist() == [1, 0, 0, 1, 0, 0]
    prefix = _mask(MaskSpec(), MaskArrays(prefix_B=jnp.asarray([3])))
    assert prefix[0].tolist() == [1, 1, 1, 0, 0, 0] and prefix[4].tolist() == [1, 1, 1, 1, 1, 0]
    seg = jnp.asarray([[1, 1, 2, 2, 2, 3]])
    docs = _mask(MaskSpec(), MaskArrays(seg, seg))
    assert docs[4].tolist() == [0, 0, 1, 1, 1, 0] and docs[5].tolist() == [0, 0, 0, 0, 0, 1]
    pad = _mask(MaskSpec(causal=False), MaskArrays(padding_BS=jnp.asarray([[1, 1, 1, 1, 0, 0]])))
    assert pad[1].tolist() == [1, 1, 1, 1, 0, 0]


B, L = 2, 100
_r = np.random.RandomState(0)
SEG = jnp.asarray(np.sort(_r.randint(0, 3, (B, L)), 1))
PAD = jnp.asarray(np.arange(L)[None] < np.array([[L], [70]]))
MASKS = {
    "causal": (MaskSpec(), MaskArrays()),
    "bidirectional": (MaskSpec(causal=False), MaskArrays()),
    "document": (MaskSpec(), MaskArrays(SEG, SEG)),
    "window": (MaskSpec(window=17), MaskArrays()),
    "window_bidirectional": (MaskSpec(causal=False, window=9), MaskArrays()),
    "document_window": (MaskSpec(window=13), MaskArrays(SEG, SEG)),
    "prefix_lm": (MaskSpec(), MaskArrays(prefix_B=jnp.asarray([30, 5]))),
    "padding": (MaskSpec(causal=False), MaskArrays(padding_BS=PAD)),
    "strided": (MaskSpec(stride=7), MaskArrays()),
    "global_tokens": (MaskSpec(window=5, global_tokens=3), MaskArrays()),
}


def _qkv(K, G, dtype, d=8):
    r = np.random.RandomState(1)
    return [jnp.asarray(r.randn(*shape), dtype) for shape in ((B, L, K, G, d), (B, L, K, d), (B, L, K, d))]


@pytest.mark.parametrize("heads", [(2, 2), (1, 4)], ids=["gqa", "mqa"])
@pytest.mark.parametrize("mask", list(MASKS))
def test_blockwise_matches_xla_forward_and_gradients(mask, heads):
    spec, arrays = MASKS[mask]
    q, k, v = _qkv(*heads, jnp.float32)
    w = jnp.asarray(np.random.RandomState(2).randn(*q.shape), jnp.float32)
    # blocks 16 x 32 over 100 positions: padded last tiles, diagonal tiles, skipped tiles
    ref = lambda q, k, v: xla_attention(q, k, v, spec, arrays, 0.3)  # noqa: E731
    tiled = lambda q, k, v: blockwise_attention(q, k, v, spec, arrays, 0.3, 16, 32)  # noqa: E731
    np.testing.assert_allclose(jax.jit(tiled)(q, k, v), ref(q, k, v), atol=1e-5)
    grads = [jax.jit(jax.grad(lambda *a, f=f: (f(*a) * w).sum(), (0, 1, 2)))(q, k, v) for f in (ref, tiled)]
    for expected, got in zip(*grads):
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True], ids=["plain", "score_bias"])
@pytest.mark.parametrize("mask", list(MASKS))
def test_xla_causal_halves_equal_the_whole_score_matrix(mask, bias, monkeypatch):
    """Causal self-attention in two query halves (the hidden quarter skipped) against the whole score matrix,
    forward and gradients, for every mask (the prefix-LM, bidirectional and padding ones keep the whole matrix)."""
    spec, arrays = MASKS[mask]
    monkeypatch.setattr(attention_lib, "CAUSAL_SPLIT_FROM", 2)
    q, k, v = _qkv(2, 2, jnp.float32)
    w = jnp.asarray(np.random.RandomState(2).randn(*q.shape), jnp.float32)
    b = jnp.asarray(np.random.RandomState(3).randn(1, 2, 2, L, L), jnp.float32) if bias else None
    whole_mask = visible(spec, arrays, jnp.arange(L), jnp.arange(L))
    whole = lambda q, k, v: xla_attention(q, k, v, spec, arrays, 0.3, b, mask_BLS=whole_mask)  # noqa: E731
    halves = lambda q, k, v: xla_attention(q, k, v, spec, arrays, 0.3, b)  # noqa: E731
    products = [sum(e.primitive.name == "dot_general" for e in jax.make_jaxpr(f)(q, k, v).jaxpr.eqns)
                for f in (whole, halves)]
    split = spec.causal and arrays.prefix_B is None
    assert products == [2, 4 if split else 2]
    np.testing.assert_allclose(jax.jit(halves)(q, k, v), whole(q, k, v), atol=1e-5)
    grads = [jax.jit(jax.grad(lambda *a, f=f: (f(*a) * w).sum(), (0, 1, 2)))(q, k, v) for f in (whole, halves)]
    for expected, got in zip(*grads):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_xla_keeps_the_whole_matrix_when_the_mesh_splits_the_length(monkeypatch):
    """Under `mesh.context` the query halves would cut across the length's shards: one pair of products."""
    monkeypatch.setattr(attention_lib, "CAUSAL_SPLIT_FROM", 2)
    q, k, v = _qkv(2, 2, jnp.float32)
    mesh = jax.sharding.AbstractMesh((2,), ("context",), axis_types=(jax.sharding.AxisType.Auto,))
    counts = []
    for length_axis in ("context", None):
        with jax.sharding.use_abstract_mesh(mesh), nn.logical_axis_rules([("length", length_axis)]):
            jaxpr = jax.make_jaxpr(lambda q, k, v: xla_attention(q, k, v, MaskSpec(), MaskArrays(), 0.3))(q, k, v)
        counts.append(sum(e.primitive.name == "dot_general" for e in jaxpr.jaxpr.eqns))
    assert counts == [2, 4]


@pytest.mark.parametrize("mask", ["causal", "document_window"])
def test_blockwise_matches_xla_in_bfloat16(mask):
    spec, arrays = MASKS[mask]
    q, k, v = _qkv(2, 2, jnp.bfloat16)
    ref = xla_attention(q, k, v, spec, arrays, 0.3).astype(jnp.float32)
    got = blockwise_attention(q, k, v, spec, arrays, 0.3, 32, 32).astype(jnp.float32)
    np.testing.assert_allclose(got, ref, atol=2e-2)
    loss = lambda f: lambda q: f(q, k, v, spec, arrays, 0.3).astype(jnp.float32).sum()  # noqa: E731
    np.testing.assert_allclose(jax.grad(loss(lambda *a: blockwise_attention(*a, 32, 32)))(q).astype(jnp.float32),
                               jax.grad(loss(xla_attention))(q).astype(jnp.float32), atol=2e-2)


@pytest.mark.parametrize("spec,arrays", [(MaskSpec(), MaskArrays()), (MaskSpec(window=40), MaskArrays()),
                                         (MaskSpec(causal=False, window=24), MaskArrays()),
                                         (MaskSpec(window=8, global_tokens=4), MaskArrays()),
                                         (MaskSpec(stride=16), MaskArrays()),
                                         (MaskSpec(window=8), MaskArrays(prefix_B=jnp.asarray([50, 3])))])
def test_tile_ranges_cover_every_visible_pair_and_skip(spec, arrays):
    """Brute force over tiles: a tile outside the range holds no visible pair (nothing is lost); for plain
    causal and local masks every tile inside holds one (nothing is computed in vain)."""
    L, bq, bk = 160, 16, 32
    full = np.asarray(visible(spec, arrays, jnp.arange(L), jnp.arange(L))).any(0)
    n_q, n_k = L // bq, L // bk
    tiles = full.reshape(n_q, bq, n_k, bk).any((1, 3))
    for i in range(n_q):
        lo, hi = (int(x) for x in key_block_range(spec, arrays, i, bq, bk, n_k))
        assert not tiles[i, :lo].any() and not tiles[i, hi:].any()
        if arrays.prefix_B is None and not spec.stride and not spec.global_tokens:
            assert tiles[i, lo:hi].all()
    for j in range(n_k):
        lo, hi = (int(x) for x in query_block_range(spec, arrays, j, bq, bk, n_q))
        assert not tiles[:lo, j].any() and not tiles[hi:, j].any()
    if spec == MaskSpec(window=40):
        assert tiles.sum() < 0.5 * n_q * n_k  # the window skips more than half the tiles


def _temp_bytes(fn, L):
    q = jax.ShapeDtypeStruct((1, L, 4, 1, 64), jnp.float32)
    kv = jax.ShapeDtypeStruct((1, L, 4, 64), jnp.float32)
    step = jax.jit(jax.grad(lambda q, k, v: fn(q, k, v).sum(), (0, 1, 2)))
    return step.lower(q, kv, kv).compile().memory_analysis().temp_size_in_bytes


def test_blockwise_temporary_memory_is_linear_in_length():
    """The compiled forward+backward at 4,096 tokens: the xla path holds the 4 x 4096^2 float32 scores (and
    their gradient); the blockwise path a few tiles of 512 x 512."""
    spec, arrays = MaskSpec(), MaskArrays()
    xla = _temp_bytes(lambda q, k, v: xla_attention(q, k, v, spec, arrays, 0.125), 4096)
    tiled = _temp_bytes(lambda q, k, v: blockwise_attention(q, k, v, spec, arrays, 0.125), 4096)
    assert xla >= 4 * 4096 ** 2 * 4  # at least one copy of the scores
    assert tiled * 8 <= xla, (tiled, xla)


def test_auto_chooses_per_backend_dtype_mask_and_length():
    causal, none = MaskSpec(), MaskArrays()
    assert choose_impl("auto", "gpu", "bfloat16", causal, none, False, 4096)[0] == "cudnn"
    assert choose_impl("auto", "gpu", "bfloat16", MaskSpec(window=128), none, False, 4096)[0] == "cudnn"
    docs = MaskArrays(SEG, SEG)
    assert choose_impl("auto", "gpu", "bfloat16", causal, docs, False, 4096)[0] == "blockwise"
    assert choose_impl("auto", "gpu", "float32", causal, none, False, 128)[0] == "xla"
    assert choose_impl("auto", "cpu", "float32", causal, none, False, attention_lib.BLOCKWISE_FROM)[0] == "blockwise"
    assert choose_impl("auto", "cpu", "float32", causal, none, False, 256)[0] == "xla"
    assert choose_impl("auto", "cpu", "float32", MaskSpec(window=64), none, False, 256)[0] == "blockwise"
    assert choose_impl("auto", "cpu", "float32", causal, none, True, 8192)[0] == "xla"  # T5's bias
    with pytest.raises(ValueError, match="not a GPU"):
        choose_impl("cudnn", "cpu", "bfloat16", causal, none, False, 4096)
    with pytest.raises(ValueError, match="document/padding"):
        choose_impl("cudnn", "gpu", "bfloat16", causal, docs, False, 4096)
    with pytest.raises(ValueError, match="score bias"):
        choose_impl("blockwise", "cpu", "float32", causal, none, True, 4096)


def test_auto_announces_its_choice_once(capsys, monkeypatch):
    monkeypatch.setattr(attention_lib, "_ANNOUNCED", set())
    cfg = small_config(attention_window=4).model
    model = build_model(cfg)
    tokens = jnp.zeros((1, 16), jnp.int32)
    params = model.init(jax.random.key(0), tokens)["params"]
    model.apply({"params": params}, tokens)
    err = capsys.readouterr().err
    assert err.count("attention: blockwise (causal, window 4; a 4-token window skips tiles)") == 1, err


def _logits(cfg, tokens, params=None):
    model = build_model(cfg.model)
    params = params if params is not None else nn.unbox(model.init(jax.random.key(0), tokens)["params"])
    return params, jax.jit(lambda p, t: model.apply({"params": p}, t))(params, tokens)


@pytest.mark.parametrize("family", ["decoder", "encoder"])
def test_whole_model_blockwise_equals_xla(family):
    objective = "causal_lm" if family == "decoder" else "mlm"
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 200)
    xla = small_config(objective, family=family, attention_impl="xla", n_kv_heads=2, positions="rope",
                       attention_window=6)
    params, expected = _logits(xla, tokens)
    tiled = small_config(objective, family=family, attention_impl="blockwise", attention_block=8, n_kv_heads=2,
                         positions="rope", attention_window=6)
    np.testing.assert_allclose(_logits(tiled, tokens, params)[1], expected, atol=1e-5)


def test_local_global_layers_reach_further_than_local_ones():
    """Two layers with a 3-token window see 4 tokens back; making the second layer global (Gemma 2's
    alternation) lets the first token reach the last position."""
    tokens = jax.random.randint(jax.random.key(1), (1, 16), 0, 200)
    changed = tokens.at[0, 0].set((tokens[0, 0] + 7) % 200)
    local = small_config(attention_window=3, positions="rope")
    params, base = _logits(local, tokens)
    assert "block_0" not in params["layers"]
    after = _logits(local, changed, params)[1]
    np.testing.assert_array_equal(after[0, 5:], base[0, 5:])  # beyond 2 layers x 2 steps back: untouched
    assert not np.allclose(after[0, 4], base[0, 4])
    mixed = small_config(attention_window=3, local_global_pattern=2, positions="rope")
    params, base = _logits(mixed, tokens)
    assert set(params["layers"]) == {"block_0", "block_1"}
    assert not np.allclose(_logits(mixed, changed, params)[1][0, 15], base[0, 15])


def test_attention_pattern_config_errors():
    from llm_jax.config import ConfigError
    with pytest.raises(ConfigError, match="set model.attention_window too"):
        small_config(local_global_pattern=2)
    with pytest.raises(ConfigError, match="scanned group of 4 layers"):
        small_config(attention_window=4, local_global_pattern=4)
    with pytest.raises(ConfigError, match="attention_block=4"):
        small_config(attention_block=4)


def test_rope_scaling_config_errors():
    from llm_jax.config import ConfigError
    with pytest.raises(ConfigError, match="needs model.rope_original_len"):
        small_config(positions="rope", rope_scaling="yarn", rope_factor=4.0)
    with pytest.raises(ConfigError, match="needs model.positions='rope'"):
        small_config(positions="learned", rope_scaling="linear", rope_factor=2.0)
    with pytest.raises(ConfigError, match="rope_factor=0.5"):
        small_config(positions="rope", rope_scaling="linear", rope_factor=0.5)
