"""Knowledge distillation (the guide's compression chapter): the student learns the next token and the teacher's
softened distribution,

    L = alpha * CE(y_true) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T),   p^T = softmax(logits / T)

(alpha = train.distill_alpha, T = train.distill_temperature; T^2 keeps the soft term's gradients at the scale of
the hard one, Hinton et al. 2015). The teacher's distribution is its top k = train.distill_top_k tokens at
temperature T, renormalised over them (`teacher_ids`, `teacher_logps`: B x L x k, added to every batch by
`train/teacher.py` — the teacher's forward pass on the same batch, "online"); the KL is taken over those k tokens
with the student's log-probabilities at T over the whole vocabulary. Logged: stats/distill_ce, stats/distill_kl.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from llm_jax.objectives.base import Objective, Sown, apply_with_aux

FIELDS = ("inputs", "targets", "segment_ids", "teacher_ids", "teacher_logps")


def distill_losses(model, params, batch, rng, deterministic: bool, *, alpha: float, temperature: float):
    logits_BLV, sown = apply_with_aux(model, params, batch["inputs"], segments_BL=batch.get("segment_ids"), rng=rng,
                                      deterministic=deterministic)
    ce_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, batch["targets"])
    student_BLK = jnp.take_along_axis(jax.nn.log_softmax(logits_BLV / temperature, axis=-1), batch["teacher_ids"],
                                      axis=-1)
    teacher_BLK = batch["teacher_logps"]
    kl_BL = jnp.sum(jnp.exp(teacher_BLK) * (teacher_BLK - student_BLK), axis=-1)
    stats = {"distill_ce": jnp.mean(ce_BL), "distill_kl": jnp.mean(kl_BL)}
    losses_BL = alpha * ce_BL + (1 - alpha) * temperature ** 2 * kl_BL
    return losses_BL, jnp.ones_like(losses_BL), Sown(sown.losses, {**sown.stats, **stats})


def configured(train_cfg) -> Objective:
    return dataclasses.replace(DISTILL, losses=functools.partial(
        distill_losses, alpha=train_cfg.distill_alpha, temperature=train_cfg.distill_temperature))


DISTILL = Objective("distill", FIELDS, functools.partial(distill_losses, alpha=0.5, temperature=2.0),
                    configure=configured, ranks=(("teacher_ids", 3), ("teacher_logps", 3)))
