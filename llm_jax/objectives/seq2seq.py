"""Sequence-to-sequence on (input, target) pairs (`data.pairs`, llm_jax/data/pairs.py): the encoder reads the
input (its padding masked out of attention), the decoder reads the target shifted right behind
`DECODER_START` and is scored on every real target id (the target and its EOS; padding weighs 0).

Held-out metrics, teacher-forced: `token_accuracy` (top prediction = target id) and `sequence_accuracy` (every id
of the target and its EOS right, i.e. what greedy decoding would produce).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from llm_jax.objectives.base import Objective, apply_with_aux, weighted_correct
from llm_jax.objectives.span_corruption import shift_right


def _logits(model, params, batch, rng, deterministic: bool):
    decoder_tokens_BT = shift_right(batch["decoder_targets"])
    return apply_with_aux(model, params, batch["encoder_inputs"], decoder_tokens_BT=decoder_tokens_BT,
                          padding_BL=batch["encoder_padding"] > 0, rng=rng, deterministic=deterministic)


def seq2seq_losses(model, params, batch, rng, deterministic: bool):
    logits_BTV, sown = _logits(model, params, batch, rng, deterministic)
    losses_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["decoder_targets"])
    return losses_BT, batch["weights"], sown


def seq2seq_metrics(model, params, batch):
    logits_BTV, _ = _logits(model, params, batch, None, True)
    weights_BT = batch["weights"]
    correct_BT = weighted_correct(logits_BTV, batch["decoder_targets"], weights_BT)
    real_B = (jnp.sum(weights_BT, axis=1) > 0).astype(jnp.float32)  # padding rows of a partial batch weigh 0
    exact_B = (jnp.sum(correct_BT, axis=1) == jnp.sum(weights_BT, axis=1)).astype(jnp.float32) * real_B
    return {"token_accuracy": (jnp.sum(correct_BT), jnp.sum(weights_BT)),
            "sequence_accuracy": (jnp.sum(exact_B), jnp.sum(real_B))}


SEQ2SEQ = Objective("seq2seq", ("encoder_inputs", "encoder_padding", "decoder_targets", "weights"), seq2seq_losses,
                    metrics=seq2seq_metrics,
                    shapes=(("decoder_targets", ("B", "T"), "int32"), ("weights", ("B", "T"), "float32")))
