"""PPO for RLHF (the guide's stage 2; Ouyang et al. 2022, Schulman et al. 2017) on the policy's own rollouts.

The policy carries a value head on its trunk (model.value_head; one forward gives logits and values). Each step's
batch comes from `llm_jax/train/rollouts.py`: replies sampled by the current policy, each scored once (a rule or a
reward model: `train.reward_model`), the scores whitened over the batch (`train.rl_whiten_rewards`). Per reply
token t the reward is the KL penalty to the reference, r_t = -beta (log p_sampler(t) - log p_ref(t)) (the "k1"
estimator of KL(policy || reference), beta = train.rl_kl), plus the score on the reply's last token; advantages by
GAE over the reply (`gae`: delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lambda A_{t+1}, V after the
last token = 0), returns R_t = A_t + V_t, advantages whitened over the batch's reply tokens. The loss per reply
token (eps = train.rl_clip for both clips, c = train.rl_value_coef):

    -min(ratio_t A_t, clip(ratio_t, 1 - eps, 1 + eps) A_t)
        + c * 0.5 * max((V_t - R_t)^2, (V_old_t + clip(V_t - V_old_t, -eps, eps) - R_t)^2)

Logged as GRPO's (reward = the raw score, kl = k3 of the current policy to the reference) plus value_loss.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np
import optax

from llm_jax.objectives.base import Objective, Sown, apply_with_aux
from llm_jax.objectives.grpo import ROLLOUT_FIELDS, ROLLOUT_SHAPES, clipped_policy_loss, kl_k3, statistics


def logps_and_values(model, params, batch, rng, deterministic: bool):
    """(log p(target_t) (B, L), V_t (B, L), `Sown`) from one forward pass."""
    (logits_BLV, values_BL), sown = apply_with_aux(
        model, params, batch["inputs"], positions_BL=batch["positions"], segments_BL=batch["segment_ids"], rng=rng,
        deterministic=deterministic, with_values=True)
    return -optax.softmax_cross_entropy_with_integer_labels(logits_BLV, batch["targets"]), values_BL, sown


def gae(rewards_BL: np.ndarray, values_BL: np.ndarray, weights_BL: np.ndarray, gamma: float, lam: float):
    """(advantages, returns) (B, L) by generalised advantage estimation over each row's reply positions (where
    weights > 0, contiguous); 0 elsewhere. The value after a reply's last token is 0 (the episode ends)."""
    advantages = np.zeros_like(values_BL, dtype=np.float32)
    for b in range(rewards_BL.shape[0]):
        at = np.flatnonzero(weights_BL[b] > 0)
        following, running = 0.0, 0.0
        for t in at[::-1]:
            delta = rewards_BL[b, t] + gamma * following - values_BL[b, t]
            running = delta + gamma * lam * running
            advantages[b, t], following = running, values_BL[b, t]
    returns = np.where(weights_BL > 0, advantages + values_BL, 0.0).astype(np.float32)
    return advantages, returns


def whiten(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(x - mean) / (std + 1e-8) over the entries where mask > 0; 0 elsewhere."""
    picked = x[mask > 0]
    return np.where(mask > 0, (x - picked.mean()) / (picked.std() + 1e-8), 0.0).astype(np.float32)


def ppo_losses(model, params, batch, rng, deterministic: bool, *, clip: float, value_coef: float):
    logp_BL, values_BL, sown = logps_and_values(model, params, batch, rng, deterministic)
    policy_BL, clipped = clipped_policy_loss(logp_BL, batch, clip)
    value_loss_BL = _value_loss(values_BL, batch, clip)
    weights_BL = batch["weights"]
    stats = {k: s / jnp.maximum(c, 1.0) for k, (s, c) in _ppo_statistics(batch, logp_BL, value_loss_BL).items()}
    return (policy_BL + value_coef * value_loss_BL, weights_BL,
            Sown(sown.losses, {**sown.stats, **stats, "clip_fraction": clipped}))


def _value_loss(values_BL, batch, clip: float):
    old_BL, returns_BL = batch["old_values"], batch["returns"]
    clipped_BL = old_BL + jnp.clip(values_BL - old_BL, -clip, clip)
    return 0.5 * jnp.maximum(jnp.square(values_BL - returns_BL), jnp.square(clipped_BL - returns_BL))


def _ppo_statistics(batch, logp_BL, value_loss_BL) -> dict:
    weights_BL = batch["weights"]
    return {**statistics(batch, kl_k3(logp_BL, batch["ref_logp"])),
            "value_loss": (jnp.sum(value_loss_BL * weights_BL), jnp.sum(weights_BL))}


def ppo_metrics(model, params, batch, *, clip: float, **_):
    logp_BL, values_BL, _ = logps_and_values(model, params, batch, None, True)
    return _ppo_statistics(batch, logp_BL, _value_loss(values_BL, batch, clip))


def configured(train_cfg) -> Objective:
    kw = dict(clip=train_cfg.rl_clip, value_coef=train_cfg.rl_value_coef)
    return dataclasses.replace(PPO, losses=functools.partial(ppo_losses, **kw),
                               metrics=functools.partial(ppo_metrics, **kw))


PPO = Objective("ppo", ROLLOUT_FIELDS + ("old_values", "returns"),
                functools.partial(ppo_losses, clip=0.2, value_coef=0.1),
                metrics=functools.partial(ppo_metrics, clip=0.2), configure=configured,
                shapes=ROLLOUT_SHAPES + tuple((name, ("B", "L"), "float32") for name in ("old_values", "returns")))
