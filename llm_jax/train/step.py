"""The jitted train and eval steps: the objective's loss, auxiliary losses that modules sow, gradient
accumulation, a trainable mask, and the bad-step guards (non-finite loss or gradients, loss spikes, float16
overflow) that decide, on device, whether an update is applied — so the host never has to wait on a step to
keep a bad one out of the parameters.

Frozen parameters (outside `train.trainable`) are not differentiated, have no optimizer state and are never
updated: the optimizer sees the trainable subtree, in which frozen leaves are None (`trainable_part`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from llm_jax.train.state import TrainState

EMA_DECAY = 0.99


def trainable_part(tree, mask):
    """`tree` with the leaves outside `mask` replaced by None (no mask: the tree itself)."""
    if mask is None:
        return tree
    return jax.tree.map(lambda x, keep: x if keep else None, tree, mask)


def merge_trainable(trainable, full):
    """The leaves of `trainable` where they exist, those of `full` (frozen) elsewhere."""
    return jax.tree.map(lambda f, t: f if t is None else t, full, trainable, is_leaf=lambda x: x is None)


def split_micro_batches(batch, micro_batches: int):
    """(B, ...) -> (M, B/M, ...), micro-batch m taking rows m, m+M, ... so each keeps rows on every shard."""
    def split(x):
        return x.reshape((x.shape[0] // micro_batches, micro_batches) + x.shape[1:]).swapaxes(0, 1)
    return jax.tree.map(split, batch)


def _gradients(model, objective, state: TrainState, batch, rng, micro_batches: int, mask=None):
    """(loss-scaled-back gradients of the trainable parameters, mean objective loss, mean `Sown` losses and
    statistics) over all micro-batches, as if the batch were one."""
    if objective.prepare is not None:  # e.g. MLM masking: once per step, so the weights cover the whole batch
        batch = objective.prepare(model, batch, rng)
    total_weight = jnp.sum(batch["weights"]) if "weights" in batch else jnp.float32(batch["targets"].size)

    def scaled_loss(trainable, micro, micro_rng):
        params = merge_trainable(trainable, state.params)
        losses, weights, sown = objective.losses(model, params, micro, micro_rng, deterministic=False)
        loss_sum = jnp.sum(losses * weights)
        total = loss_sum / total_weight
        for value in sown.losses.values():  # already weighted by the module that sowed it; a mean over micro-batches
            total = total + value / micro_batches
        return total * state.loss_scale, (loss_sum, sown)

    grad_fn = jax.grad(scaled_loss, has_aux=True)
    trainable = trainable_part(state.params, mask)

    def accumulate(carry, xs):
        grads_acc, loss_acc, aux_acc = carry
        index, micro = xs
        grads, (loss_sum, sown) = grad_fn(trainable, micro, jax.random.fold_in(rng, index))
        aux_acc = jax.tree.map(lambda a, v: a + v / micro_batches, aux_acc, sown)  # means over micro-batches
        return (jax.tree.map(jnp.add, grads_acc, grads), loss_acc + loss_sum, aux_acc), None

    micro_shapes = jax.eval_shape(lambda b: split_micro_batches(b, micro_batches), batch)
    sown_shape = jax.eval_shape(lambda m: objective.losses(model, state.params, jax.tree.map(lambda x: x[0], m),
                                                           rng, True)[2], micro_shapes)
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)
    aux0 = jax.tree.map(lambda v: jnp.zeros(v.shape, jnp.float32), sown_shape)
    (grads, loss_sum, aux), _ = jax.lax.scan(accumulate, (zeros, jnp.zeros((), jnp.float32), aux0),
                                             (jnp.arange(micro_batches), split_micro_batches(batch, micro_batches)))
    grads = jax.tree.map(lambda g, p: (g / state.loss_scale).astype(p.dtype), grads, trainable)
    return grads, loss_sum / total_weight, aux


def make_train_step(model, objective, tx, schedule, t_cfg, dynamic_loss_scale: bool, mask=None):
    """The train step for `objective`, reading its policy from the `train.*` section `t_cfg` (micro_batches,
    seed, nonfinite, spike_*, loss_scale_period); `mask` (a tree of bools, None = all) says what trains."""
    base_rng = jax.random.key(t_cfg.seed + 1)
    micro_batches, nonfinite = t_cfg.micro_batches, t_cfg.nonfinite
    spike_factor, spike_limit, spike_warmup = t_cfg.spike_factor, t_cfg.spike_limit, t_cfg.spike_warmup_steps
    scale_period = t_cfg.loss_scale_period

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(base_rng, state.step)  # dropout noise is a pure function of the step
        grads, loss, aux = _gradients(model, objective, state, batch, rng, micro_batches, mask)
        grad_norm = optax.tree.norm(grads)
        trainable = trainable_part(state.params, mask)
        updates, opt_state = tx.update(grads, state.opt_state, trainable)
        params = merge_trainable(optax.apply_updates(trainable, updates), state.params)

        finite = jnp.isfinite(grad_norm) & jnp.isfinite(loss)
        if spike_factor:
            spike = finite & (state.step >= spike_warmup) & (loss > spike_factor * state.loss_ema)
        else:
            spike = jnp.zeros((), jnp.bool_)
        spikes = jnp.where(spike, state.spikes + 1, 0)
        halt = state.halted | (spikes > spike_limit)
        if nonfinite == "stop" and not dynamic_loss_scale:
            halt = halt | ~finite
        skip = ~finite | spike | halt

        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(skip, b, a), new, old)
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        if dynamic_loss_scale:  # overflow halves the scale; `scale_period` finite steps double it
            grow = finite & (state.good_steps + 1 >= scale_period)
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
            **{f"aux/{name}": value for name, value in aux.losses.items()},
            **{f"stats/{name}": value for name, value in aux.stats.items()},
        }
        return new_state, metrics

    return train_step


def make_eval_step(model, objective):
    """(params, batch) -> (loss sum, weight sum, {metric: (sum, count)}): the objective's extra metrics, if any."""
    def eval_step(params, batch):
        if objective.prepare is not None:
            batch = objective.prepare(model, batch, None)  # None: the objective's fixed evaluation randomness
        losses, weights, _ = objective.losses(model, params, batch, None, deterministic=True)
        metrics = objective.metrics(model, params, batch) if objective.metrics is not None else {}
        return jnp.sum(losses * weights), jnp.sum(weights), metrics
    return eval_step
