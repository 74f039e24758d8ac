"""The jitted train and eval steps: cross-entropy, gradient accumulation, dynamic loss scaling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from llm_jax.train.state import TrainState


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


def make_train_step(model, tx, schedule, *, micro_batches: int, dynamic_loss_scale: bool, scale_period: int,
                    seed: int):
    base_rng = jax.random.key(seed + 1)

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(base_rng, state.step)  # dropout noise is a pure function of the step
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
        micro = split_micro_batches(batch, micro_batches)
        (grads, loss_sum), _ = jax.lax.scan(accumulate, (zeros, jnp.zeros((), jnp.float32)),
                                            (jnp.arange(micro_batches), micro))
        grads = jax.tree.map(lambda g, p: (g / state.loss_scale).astype(p.dtype), grads, state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        finite = jnp.isfinite(grad_norm)
        if dynamic_loss_scale:
            # Overflow: keep the old parameters and optimizer state, halve the scale. Otherwise double it
            # after `scale_period` finite steps in a row.
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
            params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
            grow = finite & (state.good_steps + 1 >= scale_period)
            loss_scale = jnp.where(finite, jnp.where(grow, state.loss_scale * 2, state.loss_scale),
                                   jnp.maximum(state.loss_scale / 2, 1.0))
            good_steps = jnp.where(finite & ~grow, state.good_steps + 1, 0)
        else:
            loss_scale, good_steps = state.loss_scale, state.good_steps
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                               loss_scale=loss_scale, good_steps=good_steps)
        metrics = {
            "loss": loss_sum / total_weight,
            "grad_norm": grad_norm,
            "learning_rate": schedule(state.step),
            "loss_scale": state.loss_scale,
            "skipped": (~finite).astype(jnp.int32) if dynamic_loss_scale else jnp.zeros((), jnp.int32),
        }
        return new_state, metrics

    return train_step


def make_eval_step(model):
    def eval_step(params, batch):
        losses, weights = token_losses(model, params, batch, None, deterministic=True)
        return jnp.sum(losses * weights), jnp.sum(weights)
    return eval_step
