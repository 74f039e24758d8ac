import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.infer.sampling import filter_logits, sample_token


def probs_after(probs, **kw):
    logits = jnp.log(jnp.asarray(probs, jnp.float32))
    return np.asarray(jax.nn.softmax(filter_logits(logits, **kw)))


def test_temperature_reshapes_the_distribution_as_p_to_the_1_over_t():
    p = np.array([0.7, 0.2, 0.1])
    for t in (0.5, 1.0, 2.0):
        expected = p ** (1 / t) / (p ** (1 / t)).sum()
        np.testing.assert_allclose(probs_after(p, temperature=t, top_k=0, top_p=1.0), expected, rtol=1e-5)
    sharp = probs_after(p, temperature=0.5, top_k=0, top_p=1.0)
    assert sharp[0] > 0.89 - 0.02  # the guide's example: T = 0.5 -> about [0.89, 0.08, 0.03]


def test_top_k_keeps_k_tokens_renormalised():
    p = np.array([0.3, 0.25, 0.2, 0.15, 0.05, 0.05])
    out = probs_after(p, temperature=1.0, top_k=3, top_p=1.0)
    np.testing.assert_allclose(out, [0.4, 0.25 / 0.75, 0.2 / 0.75, 0, 0, 0], atol=1e-6)


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    # The guide's example: cumulative [0.5, 0.7, 0.85, 0.93, ...] with p = 0.9 keeps four tokens.
    p = np.array([0.5, 0.2, 0.15, 0.08, 0.04, 0.02, 0.01])
    out = probs_after(p, temperature=1.0, top_k=0, top_p=0.9)
    np.testing.assert_allclose(out[:4], p[:4] / p[:4].sum(), rtol=1e-5)
    assert (out[4:] == 0).all()


def test_greedy_and_sampling_frequencies():
    logits = jnp.log(jnp.asarray([0.1, 0.6, 0.3]))
    assert int(sample_token(logits, jax.random.key(0), temperature=0.0)) == 1
    draws = jax.vmap(lambda k: sample_token(logits, k, 1.0))(jax.random.split(jax.random.key(1), 20000))
    freq = np.bincount(np.asarray(draws), minlength=3) / 20000
    np.testing.assert_allclose(freq, [0.1, 0.6, 0.3], atol=0.015)
