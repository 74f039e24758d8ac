"""Perplexity of a text under a model: exp of the mean next-token loss over non-overlapping windows."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax


@functools.partial(jax.jit, static_argnames=("model",))
def _window_nll(model, params, inputs_1L, targets_1L, weights_1L):
    logits = model.apply({"params": params}, inputs_1L)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets_1L)
    return jnp.sum(losses * weights_1L)


def perplexity(model, params, token_ids, seq_len: int) -> dict:
    """Scores every token after the first: window k predicts tokens[k*L+1 : (k+1)*L+1] from the L before."""
    ids = np.asarray(token_ids, np.int32)
    if ids.size < 2:
        raise ValueError(f"the text has {ids.size} token(s); perplexity needs at least 2")
    total, count = 0.0, 0
    for start in range(0, ids.size - 1, seq_len):
        chunk = ids[start: start + seq_len + 1]
        n = chunk.size - 1
        inputs, targets, weights = (np.zeros((1, seq_len), np.int32), np.zeros((1, seq_len), np.int32),
                                    np.zeros((1, seq_len), np.float32))
        inputs[0, :n], targets[0, :n], weights[0, :n] = chunk[:-1], chunk[1:], 1.0
        total += float(_window_nll(model, params, inputs, targets, weights))
        count += n
    return {"perplexity": math.exp(total / count), "loss": total / count, "tokens": count}
