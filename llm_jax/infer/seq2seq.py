"""Encoder-decoder generation with a cache: encode the sources once, then decode like the decoder-only model.

One jitted prefill encodes the (right-padded) sources and runs the decoder over its start token at position 0:
each cross-attention layer computes its keys and values from the encoder output there, once, and keeps them in
the model's `cache` collection with the encoder's padding mask (`models/attention.py: _cross_cache`); the
decoder's self-attention writes into the decoder-only model's slot = position KV cache (`_with_cache`, T5's
relative bias over (query position, every slot)). Then `infer/decode.py`'s on-device loop runs unchanged, one
token per row per step through `EncoderDecoder.decode` without any encoder output: per-row EOS, budgets, seeds and
greedy / temperature / top-k / top-p sampling are the decoder-only model's. Every row's target starts at position 0
with the same start token, so rows differ only in their sources, whose padding the cached mask hides.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError
from llm_jax.infer.decode import CACHE_ROUND, Result, Sampling, _decode, zero_cache


def _step(module, tokens_BT, positions_BT):
    """One decode step: the decoder reads the cache (its own keys and values, and the cross-attention ones)."""
    return module.decode(tokens_BT, positions_BT=positions_BT)


def _self_attention_cache(model, params, batch: int, slots: int):
    """Zeros for the decoder's self-attention cache only (cross-attention fills its own at prefill)."""
    cfg = model.cfg

    def cache(p):
        memory_BSD = jnp.zeros((batch, 1, cfg.d_model), cfg.compute_dtype)
        return model.apply({"params": p}, jnp.zeros((batch, 1), jnp.int32), memory_BSD, mutable=["cache"],
                           method="decode")[1]["cache"]
    shapes = jax.eval_shape(cache, params)
    return zero_cache({"decoder": {"layers": {"attention": shapes["decoder"]["layers"]["attention"]}}}, slots)


@functools.partial(jax.jit, static_argnames=("model",))
def _prefill(model, params, cache, sources_BS, padding_BS, start_B1):
    """Encodes the sources and reads the start token: (its logits (B, V), the cache with cross K/V in it)."""
    memory_BSD = model.apply({"params": params}, sources_BS, padding_BS, method="encode")
    logits_B1V, state = model.apply({"params": params, "cache": cache}, start_B1, memory_BSD, padding_BS,
                                    positions_BT=jnp.zeros_like(start_B1), mutable=["cache"], method="decode")
    return logits_B1V[:, 0], state["cache"]


def generate_seq2seq(model, params, sources: list[list[int]], max_new_tokens: int | list[int], *,
                     decoder_start_id: int = 0, eos_id: int | None = None, sampling: Sampling = Sampling(),
                     seeds: list[int] | None = None) -> Result:
    """New target token ids for each source (a batch) of an encoder-decoder, with the cache; each row stops at
    `eos_id` (not included, as in `decode.generate`) or its budget. `decoder_start_id`: the token the decoder
    reads first (T5: 0, its pad id; this project's seq2seq objective too)."""
    context = model.cfg.seq_len
    if not sources or any(len(s) == 0 for s in sources):
        raise UserError("a source is empty (the tokenizer produced no tokens for it): give it some text")
    B = len(sources)
    budgets = [max_new_tokens] * B if isinstance(max_new_tokens, int) else list(max_new_tokens)
    longest = max(len(s) for s in sources)
    if longest > context:
        raise UserError(f"a source of {longest} tokens exceeds the encoder's context of {context} tokens "
                        f"(model.seq_len); shorten it")
    if max(budgets) > context:
        raise UserError(f"{max(budgets)} new tokens exceed the decoder's context of {context} tokens "
                        f"(model.seq_len); ask for fewer")
    S = min(context, -(-longest // CACHE_ROUND) * CACHE_ROUND)  # rounded up: few shapes to compile
    tokens, padding = np.zeros((B, S), np.int32), np.zeros((B, S), bool)
    for row, s in enumerate(sources):
        tokens[row, :len(s)], padding[row, :len(s)] = s, True
    seeds = np.asarray(seeds if seeds is not None else [0] * B, np.uint32)
    max_new = max(budgets)
    slots = min(context, -(-max_new // CACHE_ROUND) * CACHE_ROUND)  # the decoder reads positions 0..max_new-1
    start = time.perf_counter()
    cache = _self_attention_cache(model, params, B, slots)
    logits, cache = _prefill(model, params, cache, jnp.asarray(tokens), jnp.asarray(padding),
                             jnp.full((B, 1), decoder_start_id, jnp.int32))
    logits.block_until_ready()
    ttft = time.perf_counter() - start
    out, counts = _decode(model, params, cache, logits, jnp.ones(B, jnp.int32), jnp.asarray(budgets, np.int32),
                          jnp.asarray(seeds), -1 if eos_id is None else int(eos_id), max_new, sampling, method=_step)
    out, counts = np.asarray(out), np.asarray(counts)
    total = time.perf_counter() - start
    return Result([out[row, :counts[row]].tolist() for row in range(B)], ttft, total, int(counts.sum()))
