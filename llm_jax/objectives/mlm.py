"""Masked language modelling (BERT): predict hidden tokens from the context on both sides (encoder family).

Of the real (non-padding) tokens, each is chosen with probability 15%; a chosen token becomes [MASK] with
probability 80%, a uniformly random token with 10%, and stays itself with 10% (Devlin et al. 2019; Hugging Face's
DataCollatorForLanguageModeling draws the same way). The loss is the cross-entropy of the original token at the
chosen positions only: they are the weights, so the step's loss is the mean over masked tokens of the batch.

The text is the loader's `inputs` (its next-token `targets` are not used); segment id 0 marks padding (packed
data numbers documents from 1). Masking runs on device inside the jitted step (`prepare`, once per step before
micro-batching) from the step's rng, and with a fixed key in evaluation, so every evaluation masks the same
positions. The [MASK] id is `model.mask_token_id`; its default -1 means the last id, vocab_size - 1, which the
tokenizer a run trains leaves free (data/pipeline.py `tokenizer_vocab_size`). With an external tokenizer set
model.mask_token_id to its [MASK] id (bert-base-uncased: 103).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from llm_jax.objectives.base import Objective, apply_with_aux

MASK_RATE = 0.15      # share of real tokens chosen for prediction
MASK_SHARE = 0.8      # of those: replaced by [MASK] ...
RANDOM_SHARE = 0.1    # ... by a random token; the remaining 0.1 stay unchanged
MASK_STREAM = 0x6D6C6D  # folded into the step's rng, so masking draws apart from the dropout noise
EVAL_SEED = 0         # evaluation masks with jax.random.key(EVAL_SEED)


def real_tokens(batch):
    """True where a token is real: segment id > 0 (0 is padding), or everywhere without segment ids."""
    if "segment_ids" in batch:
        return batch["segment_ids"] > 0
    return jnp.ones(batch["inputs"].shape, bool)


def mask_tokens(rng, tokens_BL, real_BL, vocab_size: int, mask_id: int):
    """(corrupted tokens, chosen positions) of BERT's 15% / 80-10-10 corruption of the real tokens."""
    choose_key, action_key, random_key = jax.random.split(rng, 3)
    shape = tokens_BL.shape
    chosen_BL = real_BL & (jax.random.uniform(choose_key, shape) < MASK_RATE)
    action_BL = jax.random.uniform(action_key, shape)
    random_BL = jax.random.randint(random_key, shape, 0, vocab_size, dtype=tokens_BL.dtype)
    corrupted_BL = jnp.where(action_BL < MASK_SHARE, jnp.asarray(mask_id, tokens_BL.dtype),
                             jnp.where(action_BL < MASK_SHARE + RANDOM_SHARE, random_BL, tokens_BL))
    return jnp.where(chosen_BL, corrupted_BL, tokens_BL), chosen_BL


def mlm_prepare(model, batch, rng):
    """The batch plus `masked_inputs` and `weights` (1 at chosen positions, times any weights it had)."""
    key = jax.random.key(EVAL_SEED) if rng is None else jax.random.fold_in(rng, MASK_STREAM)
    cfg = model.cfg
    masked_BL, chosen_BL = mask_tokens(key, batch["inputs"], real_tokens(batch), cfg.vocab_size, cfg.mask_id)
    weights_BL = chosen_BL.astype(jnp.float32) * batch.get("weights", 1.0)
    return {**batch, "masked_inputs": masked_BL, "weights": weights_BL}


def _logits(model, params, batch, rng, deterministic):
    return apply_with_aux(model, params, batch["masked_inputs"], segments_BL=batch.get("segment_ids"),
                          padding_BL=real_tokens(batch), head="mlm", rng=rng, deterministic=deterministic)


def mlm_losses(model, params, batch, rng, deterministic: bool):
    """Cross-entropy of the original tokens (float32), weighted to the chosen positions."""
    if "masked_inputs" not in batch:  # called outside the train/eval step, which prepare once per step
        batch = mlm_prepare(model, batch, rng)
    logits_BLV, aux = _logits(model, params, batch, rng, deterministic)
    losses_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, batch["inputs"])
    return losses_BL, batch["weights"], aux


def mlm_metrics(model, params, batch):
    """Held-out accuracy of the top prediction at the chosen positions."""
    logits_BLV, _ = _logits(model, params, batch, None, True)
    correct_BL = (jnp.argmax(logits_BLV, axis=-1) == batch["inputs"]).astype(jnp.float32)
    return {"mlm_accuracy": (jnp.sum(correct_BL * batch["weights"]), jnp.sum(batch["weights"]))}


MLM = Objective("mlm", ("inputs", "segment_ids"), mlm_losses, prepare=mlm_prepare, metrics=mlm_metrics)
