import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.models.positions import apply_rope, rope_frequencies, sinusoidal_table


def test_sinusoidal_table_matches_the_guide_formula():
    d, positions = 16, np.arange(10)
    table = np.asarray(sinusoidal_table(jnp.asarray(positions), d))
    for pos in positions:
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            np.testing.assert_allclose(table[pos, 2 * i], np.sin(angle), atol=1e-6)
            np.testing.assert_allclose(table[pos, 2 * i + 1], np.cos(angle), atol=1e-6)


def guide_rope(x, pos, theta=10000.0):
    """The guide's R_m: rotate adjacent pairs (2i, 2i+1) by m * theta_i with theta_i = base^(-2i/d)."""
    d = x.shape[-1]
    out = np.empty_like(x)
    for i in range(d // 2):
        a = pos * theta ** (-2 * i / d)
        out[2 * i] = np.cos(a) * x[2 * i] - np.sin(a) * x[2 * i + 1]
        out[2 * i + 1] = np.sin(a) * x[2 * i] + np.cos(a) * x[2 * i + 1]
    return out


def test_rope_is_the_guide_rotation_up_to_a_fixed_permutation():
    d = 8
    x = np.random.RandomState(0).randn(d).astype(np.float32)
    # Half-split layout pairs (k, k + d/2); the guide pairs (2i, 2i+1). perm maps half-split -> interleaved.
    perm = np.stack([np.arange(d // 2), np.arange(d // 2) + d // 2], axis=1).reshape(-1)
    for pos in (0, 1, 7, 100):
        ours = np.asarray(apply_rope(jnp.asarray(x)[None, None, None, :], jnp.full((1, 1), pos),
                                     rope_frequencies(8, 10000.0)))[0, 0, 0]
        np.testing.assert_allclose(ours[perm], guide_rope(x[perm], pos), atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    rng = np.random.RandomState(1)
    q, k = (jnp.asarray(rng.randn(1, 1, 1, 16).astype(np.float32)) for _ in range(2))

    def score(m, n):
        qm = apply_rope(q, jnp.full((1, 1), m), rope_frequencies(q.shape[-1], 500000.0))
        kn = apply_rope(k, jnp.full((1, 1), n), rope_frequencies(k.shape[-1], 500000.0))
        return float(jnp.sum(qm * kn))

    np.testing.assert_allclose(score(3, 1), score(12, 10), rtol=1e-5)
    np.testing.assert_allclose(score(0, 0), score(40, 40), rtol=1e-5)
    assert abs(score(3, 1) - score(3, 2)) > 1e-4


def test_rope_preserves_norms_and_frequencies():
    x = jax.random.normal(jax.random.key(0), (2, 5, 3, 8))
    pos = jnp.broadcast_to(jnp.arange(5), (2, 5))
    rotated = apply_rope(x, pos, rope_frequencies(x.shape[-1], 10000.0))
    np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(rope_frequencies(8, 10000.0), 10000.0 ** (-np.arange(0, 8, 2) / 8), rtol=1e-6)


def test_sinusoidal_model_input_is_sqrt_d_scaled_embedding_plus_table():
    """Vaswani et al.: token embeddings times sqrt(d_model), plus the sinusoids."""
    import flax.linen as nn
    import jax

    from helpers import small_config
    from llm_jax.models import build_model
    cfg = small_config(positions="sinusoidal")
    model = build_model(cfg.model)
    tokens = jnp.arange(16, dtype=jnp.int32)[None] % cfg.model.vocab_size
    variables = model.init(jax.random.key(0), tokens)
    _, state = model.apply(variables, tokens, capture_intermediates=True, mutable=["intermediates"])
    got = np.asarray(state["intermediates"]["Dropout_0"]["__call__"][0][0])
    table = np.asarray(nn.unbox(variables["params"]["embed"]["embedding"]))
    sinusoids = np.asarray(sinusoidal_table(jnp.arange(16), cfg.model.d_model))
    expected = table[np.asarray(tokens[0])] * np.sqrt(cfg.model.d_model) + sinusoids
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_rope_scaling_registry_and_the_variants_without_a_transformers_twin():
    """The HF parity tests cover linear/dynamic/yarn/llama3; here: the choices are the registry, static NTK is
    the base change written out, and dynamic NTK leaves positions within the original context untouched."""
    import dataclasses

    from helpers import small_config
    from llm_jax import config as config_lib
    from llm_jax.models import build_model
    from llm_jax.models.rope_scaling import ROPE_SCALINGS, rope_parameters
    assert config_lib.CHOICES["model.rope_scaling"] == tuple(ROPE_SCALINGS)
    view = build_model(small_config(positions="rope").model).cfg  # head_dim 8
    ntk = dataclasses.replace(view, rope_scaling="ntk", rope_factor=4.0)
    inv_freq, factor = rope_parameters(ntk, jnp.zeros((1, 4), jnp.int32))
    base = 10000.0 * 4.0 ** (8 / 6)
    np.testing.assert_allclose(inv_freq, base ** (-np.arange(0, 8, 2) / 8), rtol=1e-6)
    assert factor == 1.0
    dynamic = dataclasses.replace(view, rope_scaling="dynamic", rope_factor=4.0, rope_original_len=16)
    short = rope_parameters(dynamic, jnp.arange(16)[None])[0]
    np.testing.assert_allclose(short, rope_frequencies(8, 10000.0), rtol=1e-6)
    long = rope_parameters(dynamic, jnp.arange(32)[None])[0]  # 4 * 32/16 - 3 = 5: base * 5^(8/6)
    np.testing.assert_allclose(long, (10000.0 * 5 ** (8 / 6)) ** (-np.arange(0, 8, 2) / 8), rtol=1e-5)
