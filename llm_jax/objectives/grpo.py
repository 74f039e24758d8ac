"""Group-relative policy optimisation (GRPO; Shao et al. 2024) on rollouts the policy sampled itself.

Each step's batch is made by `llm_jax/train/rollouts.py`: for each of batch_size / G prompts, G = train.rl_group
replies sampled from the current policy, each scored by a rule (`rewards`); a reply's advantage is its reward
normalised within its group, A_i = (r_i - mean(r)) / (std(r) + 1e-4) — no value model — given to each of
its tokens (`advantages`, B x L). With
ratio_t = p_policy(token_t) / p_sampler(token_t) (the sampling policy's log-probabilities ride in the batch as
`old_logp`) and the reference's as `ref_logp`, the loss per reply token is

    -min(ratio_t A, clip(ratio_t, 1 - eps, 1 + eps) A) + beta KL_t,   KL_t = exp(d_t) - d_t - 1,  d_t = ref - policy

(eps = train.rl_clip, beta = train.rl_kl; KL_t is the non-negative "k3" estimator of KL(policy || reference),
Schulman 2020), averaged over every reply token of the batch. The gradient of the clipped term at ratio 1 is the
policy gradient A * grad log p; the clip matters once the same rollout is reused for more than one update
(train.rl_epochs).

Logged (stats/) and held out (eval_, greedy replies to held-out prompts): reward (the mean rule reward), kl (the
mean KL_t per reply token), reply_tokens; in training also clip_fraction.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp

from llm_jax.objectives.base import Objective, Sown
from llm_jax.objectives.sft import sft_losses

ROLLOUT_FIELDS = ("inputs", "targets", "weights", "segment_ids", "positions", "old_logp", "ref_logp",
                  "advantages", "rewards")
ROLLOUT_SHAPES = tuple((name, ("B", "L"), "float32") for name in ("weights", "old_logp", "ref_logp", "advantages")) \
    + (("rewards", ("B", 1), "float32"),)


def token_logps(model, params, batch, rng, deterministic: bool):
    """log p(target_t | earlier tokens) per position (B, L) and the model's `Sown`."""
    ce_BL, _, sown = sft_losses(model, params, batch, rng, deterministic)
    return -ce_BL, sown


def kl_k3(logp_BL, ref_logp_BL):
    d_BL = ref_logp_BL - logp_BL
    return jnp.exp(d_BL) - d_BL - 1.0


def statistics(batch, kl_BL) -> dict:
    """{name: (sum, count)}: per-reply reward and length, per-token KL to the reference."""
    weights_BL = batch["weights"]
    replies = jnp.sum(jnp.any(weights_BL > 0, axis=1))
    return {"reward": (jnp.sum(batch["rewards"][:, 0] * jnp.any(weights_BL > 0, axis=1)), replies),
            "kl": (jnp.sum(kl_BL * weights_BL), jnp.sum(weights_BL)),
            "reply_tokens": (jnp.sum(weights_BL), replies)}


def clipped_policy_loss(logp_BL, batch, clip: float):
    """(-min(ratio A, clip(ratio) A) per token, the share of reply tokens whose ratio left [1 - clip, 1 + clip])."""
    ratio_BL = jnp.exp(logp_BL - batch["old_logp"])
    advantages_BL = batch["advantages"]
    clipped_BL = jnp.clip(ratio_BL, 1.0 - clip, 1.0 + clip)
    weights_BL = batch["weights"]
    share = jnp.sum((jnp.abs(ratio_BL - 1.0) > clip) * weights_BL) / jnp.maximum(jnp.sum(weights_BL), 1.0)
    return -jnp.minimum(ratio_BL * advantages_BL, clipped_BL * advantages_BL), share


def grpo_losses(model, params, batch, rng, deterministic: bool, *, clip: float, beta: float):
    logp_BL, sown = token_logps(model, params, batch, rng, deterministic)
    policy_BL, clipped = clipped_policy_loss(logp_BL, batch, clip)
    kl_BL = kl_k3(logp_BL, batch["ref_logp"])
    stats = {k: s / jnp.maximum(c, 1.0) for k, (s, c) in statistics(batch, kl_BL).items()}
    return policy_BL + beta * kl_BL, batch["weights"], Sown(sown.losses, {**sown.stats, **stats,
                                                                          "clip_fraction": clipped})


def grpo_metrics(model, params, batch, **_):
    logp_BL, _ = token_logps(model, params, batch, None, True)
    return statistics(batch, kl_k3(logp_BL, batch["ref_logp"]))


def configured(train_cfg) -> Objective:
    kw = dict(clip=train_cfg.rl_clip, beta=train_cfg.rl_kl)
    return dataclasses.replace(GRPO, losses=functools.partial(grpo_losses, **kw),
                               metrics=functools.partial(grpo_metrics, **kw))


GRPO = Objective("grpo", ROLLOUT_FIELDS, functools.partial(grpo_losses, clip=0.2, beta=0.04), metrics=grpo_metrics,
                 configure=configured, shapes=ROLLOUT_SHAPES)
