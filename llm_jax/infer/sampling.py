"""The guide's sampling strategies on one logits vector: greedy, temperature, top-k and top-p (nucleus)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def filter_logits(logits_V, temperature: float, top_k: int, top_p: float):
    """Logits after temperature scaling, keeping the top-k tokens and the smallest top-p nucleus (-inf elsewhere)."""
    logits_V = logits_V.astype(jnp.float32) / temperature
    if top_k and top_k < logits_V.shape[-1]:
        kth = jax.lax.top_k(logits_V, top_k)[0][..., -1:]
        logits_V = jnp.where(logits_V < kth, -jnp.inf, logits_V)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits_V, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep a token while the mass before it is < p: the minimal set whose cumulative mass reaches p.
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        cutoff = jnp.min(jnp.where(mass_before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits_V = jnp.where(logits_V < cutoff, -jnp.inf, logits_V)
    return logits_V


def sample_token(logits_V, rng, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Greedy when temperature == 0, otherwise a draw from the filtered distribution."""
    if temperature == 0.0:
        return jnp.argmax(logits_V, axis=-1)
    return jax.random.categorical(rng, filter_logits(logits_V, temperature, top_k, top_p), axis=-1)
