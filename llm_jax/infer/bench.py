"""`llm-jax bench generate`: time to first token, time per output token with the KV cache and without it, and the
decode step's achieved memory bandwidth beside a bandwidth ceiling measured in the same process.

Prompts are random token ids (synthetic: the figures depend on shapes, not text). Greedy decoding runs to the full
budget (no EOS). Each figure is the best of `repeats` warmed-up runs. The uncached figure is what decoding costs
without a cache: one forward pass over the whole sequence so far (prompt + new tokens) per new token, here at the
last token's length, the most expensive. Bytes per decode step are the parameters plus the whole cache
(keys and values of every slot of every layer: the cached path attends over all its slots, prompt + new tokens
rounded up to a multiple of 64).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError
from llm_jax.infer.decode import CACHE_ROUND, Sampling, _decode, _prefill, empty_cache


def _best(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bandwidth_ceiling(repeats: int = 5, mib: int = 256) -> float:
    """Bytes/s of reading a `mib` MiB float32 array once (a reduction: one read, no write)."""
    x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    seconds = _best(lambda: total(x).block_until_ready(), repeats)
    return x.nbytes / seconds


@functools.partial(jax.jit, static_argnames=("model",))
def _uncached_token(model, params, tokens_BL):
    return jnp.argmax(model.apply({"params": params}, tokens_BL)[:, -1], axis=-1)


def bench_generate(loaded, batch: int, prompt_len: int, new_tokens: int, repeats: int = 3) -> dict:
    m = loaded.cfg.model
    if prompt_len + new_tokens > m.seq_len:
        raise UserError(f"--prompt-len {prompt_len} + --new-tokens {new_tokens} exceeds the model's context of "
                        f"{m.seq_len} tokens")
    if new_tokens < 2:
        raise UserError("--new-tokens must be at least 2 (time per output token needs a decode step)")
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, m.vocab_size, (batch, prompt_len)).tolist()
    model, params = loaded.model, loaded.params

    slots = min(m.seq_len, -(-(prompt_len + new_tokens) // CACHE_ROUND) * CACHE_ROUND)

    def prefill():
        cache = empty_cache(model, params, batch, slots)
        return _prefill(model, params, cache, jnp.asarray(prompts, jnp.int32),
                        jnp.full((batch,), prompt_len, jnp.int32))

    ttft = _best(lambda: prefill()[0].block_until_ready(), repeats)
    logits, filled = prefill()
    lengths, budgets = jnp.full((batch,), prompt_len, jnp.int32), jnp.full((batch,), new_tokens, jnp.int32)
    seeds = jnp.zeros((batch,), jnp.uint32)
    # the decode loop alone (it runs one forward step per new token), timed apart from the prefill
    decode = _best(lambda: _decode(model, params, filled, logits, lengths, budgets, seeds, -1, new_tokens,
                                   Sampling())[0].block_until_ready(), repeats)
    tpot = decode / new_tokens
    full = jnp.asarray(rng.integers(0, m.vocab_size, (batch, prompt_len + new_tokens)), jnp.int32)
    uncached = _best(lambda: _uncached_token(model, params, full).block_until_ready(), repeats)
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    cache_bytes = sum(x.nbytes for x in jax.tree.leaves(filled))
    ceiling = bandwidth_ceiling()
    achieved = (param_bytes + cache_bytes) / tpot
    return {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens, "platform": jax.devices()[0].platform,
            "ttft_s": ttft, "tpot_s": tpot, "decode_tokens_per_sec": batch / tpot, "uncached_tpot_s": uncached,
            "cached_speedup": uncached / tpot, "param_bytes": param_bytes, "cache_bytes": cache_bytes,
            "decode_bytes_per_sec": achieved, "bandwidth_ceiling_bytes_per_sec": ceiling,
            "bandwidth_fraction": achieved / ceiling}


SPECULATIVE_PROMPT = ("The water cycle describes how water moves between the oceans, the air and the land. The sun "
                      "warms the surface of the sea, and")


def bench_speculative(target, draft, new_tokens: int, draft_tokens: int, prompt: str = SPECULATIVE_PROMPT,
                      repeats: int = 3) -> dict:
    """`llm-jax bench speculative`: greedy decoding of `prompt` (to the full budget, no EOS) by the target alone,
    by the draft alone, and speculatively; each time the best of `repeats` warmed-up runs, prefills included."""
    from llm_jax.infer.decode import generate
    from llm_jax.infer.speculative import speculative_generate
    m = target.cfg.model
    ids = target.tokenizer.encode(prompt)
    if not ids:
        raise UserError("--prompt is empty; the benchmark needs at least one token to continue")
    runs = {}

    def timed(name, fn):
        return _best(lambda: runs.__setitem__(name, fn()), repeats)

    target_s = timed("target", lambda: generate(target.model, target.params, [ids], new_tokens, m.seq_len))
    draft_s = timed("draft", lambda: generate(draft.model, draft.params, [ids], new_tokens,
                                                        draft.cfg.model.seq_len))
    spec_s = timed("speculative", lambda: speculative_generate(
        target.model, target.params, draft.model, draft.params, [ids], new_tokens, m.seq_len,
        draft_tokens=draft_tokens))
    spec, alone = runs["speculative"], runs["target"]
    return {"prompt_tokens": len(ids), "new_tokens": new_tokens, "draft_tokens": draft_tokens,
            "platform": jax.devices()[0].platform, "target_layers": m.n_layers,
            "draft_layers": draft.cfg.model.n_layers, "acceptance_rate": spec.acceptance_rate,
            "accepted": spec.accepted, "proposed": spec.proposed, "target_forwards": spec.target_forwards,
            "tokens_per_target_forward": new_tokens / (spec.target_forwards + 1),
            "identical": spec.new_ids == alone.new_ids, "target_s": target_s, "draft_s": draft_s,
            "speculative_s": spec_s, "target_tokens_per_sec": new_tokens / target_s,
            "draft_tokens_per_sec": new_tokens / draft_s, "speculative_tokens_per_sec": new_tokens / spec_s,
            "speedup": target_s / spec_s}
