"""The guide's sampling strategies on one logits vector: greedy, temperature, top-k and top-p (nucleus).

One filter serves both callers: `generate` passes Python numbers for a whole batch, the continuous-batching engine
passes each row's own values as traced scalars (`sample_rows`); the arithmetic is the same, so a request draws the
same tokens from the same seed in either.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def filter_logits(logits_V, temperature, top_k, top_p):
    """Logits after temperature scaling, keeping the top-k tokens (k = 0: all) and the smallest top-p nucleus
    (-inf elsewhere). The parameters may be Python numbers or traced scalars."""
    logits_V = logits_V.astype(jnp.float32) / temperature
    V = logits_V.shape[-1]
    sorted_V = jnp.sort(logits_V, axis=-1)[..., ::-1]
    k = jnp.where((top_k > 0) & (top_k < V), top_k, V)
    kth = jnp.take_along_axis(sorted_V, jnp.broadcast_to(k - 1, sorted_V.shape[:-1] + (1,)), axis=-1)
    logits_V = jnp.where(logits_V < kth, -jnp.inf, logits_V)
    sorted_V = jnp.where(sorted_V < kth, -jnp.inf, sorted_V)
    probs = jax.nn.softmax(sorted_V, axis=-1)
    # Keep a token while the mass before it is < p: the minimal set whose cumulative mass reaches p.
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(mass_before < top_p, sorted_V, jnp.inf), axis=-1, keepdims=True)
    return jnp.where((top_p < 1.0) & (logits_V < cutoff), -jnp.inf, logits_V)


def sample_token(logits_V, rng, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Greedy when temperature == 0, otherwise a draw from the filtered distribution."""
    if temperature == 0.0:
        return jnp.argmax(logits_V, axis=-1)
    return jax.random.categorical(rng, filter_logits(logits_V, temperature, top_k, top_p), axis=-1)


def sample_rows(logits_BV, keys_B, temperature_B, top_k_B, top_p_B):
    """One token per row with that row's own parameters: greedy rows (temperature 0) take the argmax, the others
    draw as `sample_token` would. When every row is greedy the filter is skipped."""
    greedy_B = jnp.argmax(logits_BV, axis=-1)

    def drawn():
        def one(logits_V, key, t, k, p):
            return jax.random.categorical(key, filter_logits(logits_V, jnp.where(t > 0, t, 1.0), k, p), axis=-1)
        sampled_B = jax.vmap(one)(logits_BV, keys_B, temperature_B, top_k_B, top_p_B)
        return jnp.where(temperature_B > 0, sampled_B, greedy_B)

    return jax.lax.cond(jnp.any(temperature_B > 0), drawn, lambda: greedy_B).astype(jnp.int32)
