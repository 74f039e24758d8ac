"""Knowledge distillation (the guide's compression chapter): the student learns the next token and the teacher's
softened distribution,

    L = alpha * CE(y_true) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T),   p^T = softmax(logits / T)

(alpha = train.distill_alpha, T = train.distill_temperature; T^2 keeps the soft term's gradients at the scale of
the hard one, Hinton et al. 2015). The teacher's distribution at temperature T is carried by its top k =
train.distill_top_k tokens and their log-probabilities (`teacher_ids`, `teacher_logps`: B x L x k, added to every
batch by `train/teacher.py` — the teacher's forward pass on the same batch, "online", or a dump), plus the rest of
the vocabulary as one outcome holding the mass they leave; the KL is over those k + 1 outcomes, with the student's
log-probabilities at T over the whole vocabulary. (Renormalising the top k instead, as this file first did, tells
the student that every other token is impossible: experiments/distill measured a student 2.2x worse in held-out
perplexity than the same student from scratch.) Logged: stats/distill_ce, stats/distill_kl.
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
    student_BLV = jax.nn.log_softmax(logits_BLV / temperature, axis=-1)
    ids_BLK, teacher_BLK = batch["teacher_ids"], batch["teacher_logps"]
    student_BLK = jnp.take_along_axis(student_BLV, ids_BLK, axis=-1)
    kl_BL = jnp.sum(jnp.exp(teacher_BLK) * (teacher_BLK - student_BLK), axis=-1)
    # the rest of the vocabulary as one outcome: the mass the teacher leaves outside its top k against the student's
    # there (a renormalised top k would teach that every other token is impossible)
    in_top_BLV = jnp.any(ids_BLK[..., None, :] == jnp.arange(logits_BLV.shape[-1])[:, None], axis=-1)
    student_rest_BL = jax.nn.logsumexp(jnp.where(in_top_BLV, -jnp.inf, student_BLV), axis=-1)
    teacher_rest_BL = jnp.maximum(1.0 - jnp.sum(jnp.exp(teacher_BLK), axis=-1), 0.0)
    kl_BL = kl_BL + jnp.where(teacher_rest_BL > 1e-6, teacher_rest_BL * (
        jnp.log(jnp.maximum(teacher_rest_BL, 1e-6)) - jnp.maximum(student_rest_BL, -1e4)), 0.0)
    stats = {"distill_ce": jnp.mean(ce_BL), "distill_kl": jnp.mean(kl_BL)}
    losses_BL = alpha * ce_BL + (1 - alpha) * temperature ** 2 * kl_BL
    return losses_BL, jnp.ones_like(losses_BL), Sown(sown.losses, {**sown.stats, **stats})


def configured(train_cfg) -> Objective:
    return dataclasses.replace(DISTILL, losses=functools.partial(
        distill_losses, alpha=train_cfg.distill_alpha, temperature=train_cfg.distill_temperature))


DISTILL = Objective("distill", FIELDS, functools.partial(distill_losses, alpha=0.5, temperature=2.0),
                    configure=configured, shapes=(("teacher_ids", ("B", "L", "K"), "int32"),
                                                  ("teacher_logps", ("B", "L", "K"), "float32")))
