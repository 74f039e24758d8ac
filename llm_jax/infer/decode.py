"""Decoding with a KV cache: one jitted prefill over the (padded) prompts, then one jitted loop of decode steps
that runs on the device until every sequence has stopped.

The cache is the model's `cache` collection: per layer, keys and values in a slot per position (slot = the
token's position), (layers, batch, slots, kv_heads, head_dim) with slots = the longest prompt + its new tokens
rounded up to a multiple of 64 (at most model.seq_len), laid out by the logical axes (batch, kv_heads) like the
activations (constrained to them inside the step; `empty_cache` creates it sharded under an active mesh). Every
decode step attends over all slots (a mask hides the unwritten). Prompts of different lengths share a batch:
they are right-padded, each row's first new token is read at its own last prompt position, and each row then
writes at its own positions; a padded prompt's stale slots lie after the row's query and are never seen (the
causal rule on positions is the whole mask). Each row stops on its EOS or its token budget; sampling is the
guide's greedy / temperature / top-k / top-p with one seed per row.
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError
from llm_jax.models.attention import CACHE_AXES
from llm_jax.parallel.mesh import fit_spec
from llm_jax.infer.sampling import sample_token


class Sampling(NamedTuple):
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0


CACHE_ROUND = 64  # cache lengths are rounded up to a multiple of this: fewer distinct shapes to compile


def empty_cache(model, params, batch: int, slots: int):
    """A zero cache of `slots` positions per sequence: (layers, batch, slots, kv_heads, head_dim) per leaf.
    Under an active mesh and logical rules (`parallel.mesh.activate`) it is created sharded like the
    activations: batch over the data axes, K/V heads over tensor."""
    shapes = jax.eval_shape(lambda p: model.apply({"params": p}, jnp.zeros((batch, 1), jnp.int32),
                                                  mutable=["cache"])[1]["cache"], params)
    return zero_cache(shapes, slots)


def zero_cache(shapes, slots: int):
    """Zeros shaped like the cache leaves `shapes` (layers, batch, any slots, ...) with `slots` slots each,
    sharded like the activations under an active mesh (`empty_cache`)."""
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[:2] + (slots,) + s.shape[3:], s.dtype), shapes)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def spec(s):
        logical = (None,) * (len(s.shape) - len(CACHE_AXES)) + CACHE_AXES
        return fit_spec(nn.logical_to_mesh_axes(logical), s.shape, mesh)
    return jax.jit(lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
                   out_shardings=jax.tree.map(spec, shapes))()


@functools.partial(jax.jit, static_argnames=("model",))
def _prefill(model, params, cache, tokens_BP, lengths_B, images_BHWC=None):
    """Runs the padded prompts (after their images, for a vlm) into `cache`; returns (last-prompt-position logits
    (B, V), cache)."""
    B, P = tokens_BP.shape
    positions_BP = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
    images = {} if images_BHWC is None else {"images_BHWC": images_BHWC}
    logits_BPV, state = model.apply({"params": params, "cache": cache}, tokens_BP, positions_BP, mutable=["cache"],
                                    **images)
    return jnp.take_along_axis(logits_BPV, (lengths_B - 1)[:, None, None], axis=1)[:, 0], state["cache"]


def _pick(logits_BV, seeds_B, step, sampling: Sampling):
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), step))(seeds_B)
    return jax.vmap(lambda logits, key: sample_token(logits, key, *sampling))(logits_BV, keys).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new", "sampling", "method"))
def _decode(model, params, cache, first_logits_BV, lengths_B, budget_B, seeds_B, eos_id, max_new: int,
            sampling: Sampling, method=None):
    """The decode loop on the device: (new tokens (B, max_new), how many each row produced (B,)). Each step is
    `model.apply(..., tokens_B1, positions_B1, method=method)` (default `__call__`) with the cache mutable."""
    B = lengths_B.shape[0]
    out_BN = jnp.zeros((B, max_new), jnp.int32)

    def cond(carry):
        step, _, _, done_B, _, _ = carry
        return (step < max_new) & ~jnp.all(done_B)

    def body(carry):
        step, token_B, cache, done_B, count_B, out_BN = carry
        stop_B = done_B | (token_B == eos_id) | (count_B >= budget_B)
        out_BN = out_BN.at[:, step].set(jnp.where(stop_B, 0, token_B))
        count_B = count_B + (~stop_B).astype(jnp.int32)
        positions_B1 = (lengths_B + step)[:, None]
        logits_B1V, state = model.apply({"params": params, "cache": cache}, token_B[:, None], positions_B1,
                                        mutable=["cache"], method=method)
        next_B = _pick(logits_B1V[:, 0], seeds_B, step + 1, sampling)
        return step + 1, next_B, state["cache"], stop_B, count_B, out_BN

    first_B = _pick(first_logits_BV, seeds_B, 0, sampling)
    carry = (jnp.int32(0), first_B, cache, jnp.zeros(B, bool), jnp.zeros(B, jnp.int32), out_BN)
    _, _, _, _, count_B, out_BN = jax.lax.while_loop(cond, body, carry)
    return out_BN, count_B


class Result(NamedTuple):
    new_ids: list[list[int]]
    ttft_s: float        # prefill and the first token of every row
    total_s: float
    tokens: int          # new tokens over all rows


def pad_prompts(prompts: list[list[int]], max_new_tokens: int | list[int], contexts: dict[str, int]):
    """(per-row budgets, lengths (B,), right-padded tokens (B, longest)) of a batch of prompts, after checking that
    none is empty and each prompt plus its budget fits every context in `contexts` ({"model's": seq_len, ...})."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise UserError("a prompt is empty (the tokenizer produced no tokens for it): give it some text")
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    for who, limit in contexts.items():
        for p, n in zip(prompts, budgets):
            if len(p) + n > limit:
                raise UserError(f"a prompt of {len(p)} tokens plus {n} new tokens exceeds the {who} context of "
                                f"{limit} tokens (model.seq_len); shorten the prompt or ask for fewer tokens")
    lengths = np.asarray([len(p) for p in prompts], np.int32)
    tokens = np.zeros((len(prompts), int(lengths.max())), np.int32)
    for row, p in enumerate(prompts):
        tokens[row, :len(p)] = p
    return budgets, lengths, tokens


def generate(model, params, prompts: list[list[int]], max_new_tokens: int | list[int], context: int, *,
             sampling: Sampling = Sampling(), seeds: list[int] | None = None, eos_id: int | None = None,
             images=None) -> Result:
    """New token ids for each prompt (a batch), with the KV cache. `context` is the model's `seq_len`: a prompt
    and its new tokens must fit in it. A vlm (model.family="vlm") reads one image per prompt first: `images`
    (B, S, S, 3) float32 in [0, 1]; the cache keeps its `image_tokens` slots before the text's."""
    budgets, lengths, tokens = pad_prompts(prompts, max_new_tokens, {"model's": context})
    B = len(prompts)
    offset = model.cfg.image_tokens
    if bool(offset) != (images is not None):
        raise UserError("a vision-language model (model.family='vlm') reads an image with every prompt: pass "
                        "images" if offset else f"images given, but model.family={model.cfg.family!r} reads none")
    if images is not None and tuple(np.shape(images)) != (B, model.cfg.image_size, model.cfg.image_size, 3):
        raise UserError(f"images of shape {tuple(np.shape(images))}; the model reads "
                        f"{(B, model.cfg.image_size, model.cfg.image_size, 3)} (one per prompt)")
    seeds = np.asarray(seeds if seeds is not None else [0] * B, np.uint32)
    max_new = max(budgets)
    slots = offset + min(context, -(-int((lengths + np.asarray(budgets)).max()) // CACHE_ROUND) * CACHE_ROUND)
    start = time.perf_counter()
    cache = empty_cache(model, params, B, slots)
    logits, cache = _prefill(model, params, cache, jnp.asarray(tokens), jnp.asarray(lengths),
                             None if images is None else jnp.asarray(images, jnp.float32))
    logits.block_until_ready()
    ttft = time.perf_counter() - start
    out, counts = _decode(model, params, cache, logits, jnp.asarray(lengths), jnp.asarray(budgets, np.int32),
                          jnp.asarray(seeds), -1 if eos_id is None else int(eos_id), max_new, sampling)
    out, counts = np.asarray(out), np.asarray(counts)
    total = time.perf_counter() - start
    new_ids = [out[row, :counts[row]].tolist() for row in range(B)]
    return Result(new_ids, ttft, total, int(counts.sum()))
