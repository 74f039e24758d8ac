"""Supervised fine-tuning: next-token cross-entropy on the trained tokens of packed examples (llm_jax/data/sft.py).

The batch carries `weights` (1 on the completion / the assistant's turns and their EOS, 0 elsewhere and on
padding), `segment_ids` (the examples of a packed row: with model.document_mask none attends to another) and
`positions` (restarting at 0 for each example, so a packed example sees the positions it would see alone). The
loss is the weighted mean over the trained tokens (the train step divides by the weight sum). Held-out metric:
`token_accuracy` of the trained tokens, teacher-forced.
"""

from __future__ import annotations

import optax

from llm_jax.objectives.base import Objective, apply_with_aux, token_accuracy


def _forward(model, params, batch, rng, deterministic: bool, **kwargs):
    return apply_with_aux(model, params, batch["inputs"], positions_BL=batch["positions"],
                          segments_BL=batch["segment_ids"], rng=rng, deterministic=deterministic, **kwargs)


def sft_losses(model, params, batch, rng, deterministic: bool):
    if model.cfg.loss_chunk:
        losses_BL, sown = _forward(model, params, batch, rng, deterministic, targets_BL=batch["targets"])
        return losses_BL, batch["weights"], sown
    logits_BLV, sown = _forward(model, params, batch, rng, deterministic)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BLV, batch["targets"]), batch["weights"], sown


def sft_metrics(model, params, batch):
    logits_BLV, _ = _forward(model, params, batch, None, True)
    return {"token_accuracy": token_accuracy(logits_BLV, batch["targets"], batch["weights"])}


SFT = Objective("sft", ("inputs", "targets", "weights", "segment_ids", "positions"), sft_losses, metrics=sft_metrics,
                shapes=(("weights", ("B", "L"), "float32"),))
