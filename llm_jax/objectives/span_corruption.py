"""T5 span corruption (Raffel et al. 2020): drop random spans of a text window, replace each by a sentinel in
the encoder input, and make the decoder produce the sentinels followed by the spans they stand for.

With L tokens, noise density 0.15 and mean span 3: n = round(0.15 L) noise tokens in k = round(n / 3) spans,
alternating with k non-noise spans (the window starts with non-noise). Both segmentations are random (T5's
`random_spans_noise_mask`), drawn on device from the step's rng, so every shape is static:

    inputs  = span_0  S_0  span_2  S_1 ...      length L - n + k
    targets = S_0  noise_0  S_1  noise_1 ...   length n + k

Sentinel S_i is id vocab_size - 1 - i (T5's <extra_id_i> layout): the run's tokenizer leaves the top k ids free
(`config.reserved_ids`; the noise density and mean span are `config.NOISE_DENSITY`, `config.MEAN_SPAN`). The
decoder reads the targets shifted right behind `DECODER_START` (id 0, T5's pad id).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from llm_jax.config import span_corruption_counts
from llm_jax.objectives.base import Objective, apply_with_aux

DECODER_START = 0
CORRUPTION_STREAM = 0x7335  # folded into the step's rng, so the spans draw apart from the dropout noise
EVAL_SEED = 0


def _segment_lengths(rng, total: int, parts: int):
    """`parts` random positive lengths summing to `total` (distinct random cut points)."""
    cuts = jnp.sort(jax.random.permutation(rng, total - 1)[: parts - 1] + 1)
    return jnp.diff(jnp.concatenate([jnp.zeros(1, cuts.dtype), cuts, jnp.full(1, total, cuts.dtype)]))


def noise_mask(rng, length: int):
    """(L,) bool: True on the noise tokens — k noise spans interleaved with k non-noise spans, non-noise first."""
    noise, spans = span_corruption_counts(length)
    noise_rng, keep_rng = jax.random.split(rng)
    lengths = jnp.stack([_segment_lengths(keep_rng, length - noise, spans),
                         _segment_lengths(noise_rng, noise, spans)], axis=1).reshape(-1)
    starts = jnp.zeros(length, jnp.int32).at[jnp.cumsum(lengths)[:-1]].set(1)
    return jnp.cumsum(starts) % 2 == 1


def _spans_to_sentinels(tokens_L, mask_L, vocab_size: int, out_len: int):
    """Each run of masked tokens -> one sentinel (vocab_size - 1 - run index); the rest kept; compacted."""
    previous = jnp.concatenate([jnp.zeros(1, bool), mask_L[:-1]])
    first = mask_L & ~previous
    sentinel = vocab_size - jnp.cumsum(first)
    out = jnp.where(first, sentinel, tokens_L)
    keep = ~(mask_L & previous)
    order = jnp.argsort(~keep, stable=True)[:out_len]
    return out[order]


def corrupt(rng, tokens_BL, vocab_size: int):
    """(encoder inputs (B, L - n + k), targets (B, n + k)) of span corruption for each row."""
    B, L = tokens_BL.shape
    noise, spans = span_corruption_counts(L)
    masks_BL = jax.vmap(lambda r: noise_mask(r, L))(jax.random.split(rng, B))
    inputs = jax.vmap(lambda t, m: _spans_to_sentinels(t, m, vocab_size, L - noise + spans))(tokens_BL, masks_BL)
    targets = jax.vmap(lambda t, m: _spans_to_sentinels(t, ~m, vocab_size, noise + spans))(tokens_BL, masks_BL)
    return inputs, targets


def shift_right(targets_BT):
    return jnp.concatenate([jnp.full((targets_BT.shape[0], 1), DECODER_START, targets_BT.dtype),
                            targets_BT[:, :-1]], axis=1)


def span_corruption_prepare(model, batch, rng):
    """The batch plus `encoder_inputs` (B, L - n + k), `decoder_targets` (B, n + k) and their `weights`, drawn
    once per step (a fixed key in evaluation, so every evaluation corrupts the same spans)."""
    key = jax.random.key(EVAL_SEED) if rng is None else jax.random.fold_in(rng, CORRUPTION_STREAM)
    inputs_BS, targets_BT = corrupt(key, batch["inputs"], model.cfg.vocab_size)
    return {**batch, "encoder_inputs": inputs_BS, "decoder_targets": targets_BT,
            "weights": jnp.ones(targets_BT.shape, jnp.float32)}


def span_corruption_losses(model, params, batch, rng, deterministic: bool):
    """Cross-entropy of every target token (sentinels and span tokens) given the corrupted window."""
    if "encoder_inputs" not in batch:  # called outside the train/eval step, which prepare once per step
        batch = span_corruption_prepare(model, batch, rng)
    targets_BT = batch["decoder_targets"]
    logits_BTV, sown = apply_with_aux(model, params, batch["encoder_inputs"], decoder_tokens_BT=shift_right(targets_BT),
                                      rng=rng, deterministic=deterministic)
    losses_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
    return losses_BT, batch["weights"], sown


SPAN_CORRUPTION = Objective("span_corruption", ("inputs",), span_corruption_losses,
                            prepare=span_corruption_prepare)
