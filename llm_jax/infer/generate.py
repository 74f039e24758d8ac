"""Autoregressive generation without a KV cache: each new token re-runs the model on a fixed-size window.

The window is `model.seq_len` tokens; a longer text keeps its most recent `seq_len` tokens. One compiled
forward pass serves every step (the position being read is an argument, not a shape).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError
from llm_jax.infer.sampling import sample_token


@functools.partial(jax.jit, static_argnames=("model", "temperature", "top_k", "top_p"))
def _next_token(model, params, window_1L, position, rng, temperature, top_k, top_p):
    logits_1LV = model.apply({"params": params}, window_1L)
    return sample_token(logits_1LV[0, position], rng, temperature, top_k, top_p)


def generate_ids(model, params, prompt_ids, max_new_tokens: int, seq_len: int, *, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, eos_id: int | None = None) -> list[int]:
    """Returns only the new token ids (stops early at `eos_id`)."""
    ids = list(prompt_ids)
    if not ids:
        raise UserError("the prompt is empty (the tokenizer produced no tokens for it): give --prompt some text")
    rng = jax.random.key(seed)
    new = []
    for i in range(max_new_tokens):
        context = ids[-seq_len:]
        window = np.zeros((1, seq_len), np.int32)
        window[0, : len(context)] = context
        token = int(_next_token(model, params, jnp.asarray(window), len(context) - 1, jax.random.fold_in(rng, i),
                                float(temperature), int(top_k), float(top_p)))
        if eos_id is not None and token == eos_id:
            break
        ids.append(token)
        new.append(token)
    return new
