"""The jitted train and eval steps: cross-entropy, gradient accumulation, and the bad-step guards
(non-finite loss or gradients, loss spikes, float16 overflow) that decide, on device, whether an update
is applied — so the host never has to wait on a step to keep a bad one out of the parameters."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from llm_jax.train.state import TrainState

EMA_DECAY = 0.99


@dataclasses.dataclass(frozen=True)
class StepPolicy:
    micro_batches: int = 1
    dynamic_loss_scale: bool = False
    scale_period: int = 1000
    seed: int = 0
    nonfinite: str = "stop"       # "stop": halt (state frozen at the last good step); "skip": drop the update
    spike_factor: float = 0.0
    spike_limit: int = 5
    spike_warmup_steps: int = 100

    @classmethod
    def from_config(cls, t_cfg, dynamic_loss_scale: bool) -> "StepPolicy":
        return cls(micro_batches=t_cfg.micro_batches, dynamic_loss_scale=dynamic_loss_scale,
                   scale_period=t_cfg.loss_scale_period, seed=t_cfg.seed, nonfinite=t_cfg.nonfinite,
                   spike_factor=t_cfg.spike_factor, spike_limit=t_cfg.spike_limit,
                   spike_warmup_steps=t_cfg.spike_warmup_steps)


def token_losses(model, params, batch, rng, deterministic: bool):
    """Per-token cross-entropy (float32) and its weights (1 for every real target)."""
    logits_BLV = model.apply({"params": params}, batch["inputs"], segments_BL=batch.get("segment_ids"),
                             deterministic=deterministic, rngs=None if deterministic else {"dropout": rng})
    losses_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, batch["targets"])
    weights_BL = batch.get("weights", jnp.ones_like(losses_BL))
    return losses_BL, weights_BL


def split_micro_batches(batch, micro_batches: int):
    """(B, ...) -> (M, B/M, ...), micro-batch m taking rows m, m+M, ... so each keeps rows on every shard."""
    def split(x):
        return x.reshape((x.shape[0] // micro_batches, micro_batches) + x.shape[1:]).swapaxes(0, 1)
    return jax.tree.map(split, batch)


def _gradients(model, state: TrainState, batch, rng, micro_batches: int):
    """(mean-loss gradients, mean loss) over all micro-batches, as if the batch were one (loss-scaled)."""
    total_weight = jnp.sum(batch.get("weights", jnp.ones(batch["targets"].shape, jnp.float32)))

    def scaled_loss(params, micro, micro_rng):
        losses, weights = token_losses(model, params, micro, micro_rng, deterministic=False)
        loss_sum = jnp.sum(losses * weights)
        return loss_sum / total_weight * state.loss_scale, loss_sum

    grad_fn = jax.grad(scaled_loss, has_aux=True)

    def accumulate(carry, xs):
        grads_acc, loss_acc = carry
        index, micro = xs
        grads, loss_sum = grad_fn(state.params, micro, jax.random.fold_in(rng, index))
        return (jax.tree.map(jnp.add, grads_acc, grads), loss_acc + loss_sum), None

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    (grads, loss_sum), _ = jax.lax.scan(accumulate, (zeros, jnp.zeros((), jnp.float32)),
                                        (jnp.arange(micro_batches), split_micro_batches(batch, micro_batches)))
    grads = jax.tree.map(lambda g, p: (g / state.loss_scale).astype(p.dtype), grads, state.params)
    return grads, loss_sum / total_weight


def make_train_step(model, tx, schedule, policy: StepPolicy):
    base_rng = jax.random.key(policy.seed + 1)

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(base_rng, state.step)  # dropout noise is a pure function of the step
        grads, loss = _gradients(model, state, batch, rng, policy.micro_batches)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)
        if policy.spike_factor:
            spike = finite & (state.step >= policy.spike_warmup_steps) & (loss > policy.spike_factor * state.loss_ema)
        else:
            spike = jnp.zeros((), jnp.bool_)
        spikes = jnp.where(spike, state.spikes + 1, 0)
        halt = state.halted | (spikes > policy.spike_limit)
        if policy.nonfinite == "stop" and not policy.dynamic_loss_scale:
            halt = halt | ~finite
        skip = ~finite | spike | halt

        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(skip, b, a), new, old)
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        if policy.dynamic_loss_scale:  # overflow halves the scale; `scale_period` finite steps double it
            grow = finite & (state.good_steps + 1 >= policy.scale_period)
            loss_scale = jnp.where(finite, jnp.where(grow, state.loss_scale * 2, state.loss_scale),
                                   jnp.maximum(state.loss_scale / 2, 1.0))
            good_steps = jnp.where(finite & ~grow, state.good_steps + 1, 0)
        else:
            loss_scale, good_steps = state.loss_scale, state.good_steps
        ema = jnp.where(state.step == 0, loss, EMA_DECAY * state.loss_ema + (1 - EMA_DECAY) * loss)
        new_state = TrainState(
            step=jnp.where(halt, state.step, state.step + 1), params=params, opt_state=opt_state,
            loss_scale=loss_scale, good_steps=good_steps, loss_ema=jnp.where(skip, state.loss_ema, ema),
            spikes=spikes, skipped=state.skipped + (skip & ~halt).astype(jnp.int32), halted=halt)
        metrics = {
            "loss": loss, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
            "loss_scale": state.loss_scale, "skipped": (skip & ~halt).astype(jnp.int32),
            "skipped_total": new_state.skipped, "halted": halt, "state_step": new_state.step,
        }
        return new_state, metrics

    return train_step


def make_eval_step(model):
    def eval_step(params, batch):
        losses, weights = token_losses(model, params, batch, None, deterministic=True)
        return jnp.sum(losses * weights), jnp.sum(weights)
    return eval_step
