"""Causal language modelling: predict token t+1 from tokens ..t (the decoder-only pretraining objective)."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from llm_jax.objectives.base import Objective, apply_with_aux


def causal_lm_losses(model, params, batch, rng, deterministic: bool):
    """Cross-entropy of every next token (float32); weights 1 for every real target unless the batch says. With
    model.loss_chunk the model fuses its output head with the loss, a chunk of positions at a time."""
    if model.cfg.loss_chunk:
        losses_BL, aux = apply_with_aux(model, params, batch["inputs"], segments_BL=batch.get("segment_ids"),
                                        targets_BL=batch["targets"], rng=rng, deterministic=deterministic)
        return losses_BL, batch.get("weights", jnp.ones_like(losses_BL)), aux
    logits_BLV, aux = apply_with_aux(model, params, batch["inputs"], segments_BL=batch.get("segment_ids"), rng=rng,
                                     deterministic=deterministic)
    losses_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, batch["targets"])
    return losses_BL, batch.get("weights", jnp.ones_like(losses_BL)), aux


CAUSAL_LM = Objective("causal_lm", ("inputs", "targets", "segment_ids"), causal_lm_losses)
