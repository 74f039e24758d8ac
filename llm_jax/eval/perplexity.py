"""Perplexity of a text under a model: exp of the mean next-token loss over non-overlapping windows (the text file
it scores is read by `textfile.read_text_for_eval`: one clear error for any file that is not text)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from llm_jax.errors import UserError
from llm_jax.infer.load import load_workdir

@functools.partial(jax.jit, static_argnames=("model",))
def _window_nll(model, params, inputs_1L, targets_1L, weights_1L):
    logits = model.apply({"params": params}, inputs_1L)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets_1L)
    return jnp.sum(losses * weights_1L)


def perplexity(model, params, token_ids, seq_len: int) -> dict:
    """Scores every token after the first: window k predicts tokens[k*L+1 : (k+1)*L+1] from the L before."""
    ids = np.asarray(token_ids, np.int32)
    if ids.size < 2:
        raise UserError(f"the text has {ids.size} token(s); perplexity needs at least 2 (one to predict from, one "
                        f"to score)")
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


def workdir_scorer(workdir: str):
    """text -> perplexity under a trained llm_jax model (token-level, as `llm-jax eval perplexity` reports it):
    the scorer `data prepare` filters with when data.filter.perplexity_model names a work directory."""
    loaded = load_workdir(workdir)

    def score(text: str) -> float:
        ids = loaded.tokenizer.encode(text[:20_000])
        if len(ids) < 2:
            return float("inf")
        return perplexity(loaded.model, loaded.params, ids, loaded.cfg.model.seq_len)["perplexity"]

    return score


@functools.partial(jax.jit, static_argnames=("model",))
def _position_nll_BL(model, params, inputs_BL, targets_BL):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, inputs_BL), targets_BL)


def loss_by_position(model, params, token_ids, seq_len: int, edges, batch_size: int = 4) -> dict:
    """Mean next-token loss per position bucket over the full windows of `seq_len` tokens in `token_ids`:
    {"lo-hi": nats} for consecutive `edges` (e.g. 0, 256, 512, 1024, 2048), and the number of windows. How a
    long-context model's loss holds up past its training length (falls with more context, or blows up where
    positions were never seen)."""
    ids = np.asarray(token_ids, np.int32)
    n = (ids.size - 1) // seq_len
    if n < 1:
        raise UserError(f"loss by position needs at least {seq_len + 1} tokens, the text has {ids.size}")
    total = np.zeros(seq_len)
    for start in range(0, n, batch_size):
        rows = range(start, min(n, start + batch_size))
        inputs = np.stack([ids[r * seq_len:(r + 1) * seq_len] for r in rows])
        targets = np.stack([ids[r * seq_len + 1:(r + 1) * seq_len + 1] for r in rows])
        total += np.asarray(_position_nll_BL(model, params, inputs, targets)).sum(0)
    mean = total / n
    return {"windows": n, **{f"{lo}-{hi}": float(mean[lo:hi].mean()) for lo, hi in zip(edges[:-1], edges[1:])}}
