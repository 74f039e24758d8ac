"""Pipeline parallelism as one SPMD program: the layer stack is cut into stages along the `stage` mesh axis
and micro-batches flow through them.

The stacked layer parameters (L, ...) are already sharded over `stage` on their first axis (logical rule
`layers -> stage`), so viewing them as (stages, L / stages, ...) moves no data. A buffer holds one
micro-batch per stage; every iteration shifts it one stage forward (a collective permute under GSPMD), feeds
the next micro-batch into stage 0, and lets every stage apply its layers to its slot at once (a vmap over the
sharded stage axis: each device computes its own stage). After M + S - 1 iterations all M micro-batches have
left the last stage: the GPipe fill-drain schedule, bubble fraction (S - 1) / (M + S - 1).

The circular (interleaved) schedule gives each stage R > 1 non-adjacent groups of layers: a micro-batch
passes the ring of stages R times, so the pipeline fills R times faster relative to the work:
bubble (S - 1) / (R·M + S - 1). Stage s then needs layer groups s, S + s, 2S + s, ...; the parameters are
stored in layer order, so this schedule regathers them across stages each step (correct, but it costs
communication GPipe does not).

Micro-batches take rows m, m + M, m + 2M, ... of the batch, so each keeps rows on every data shard.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


def bubble_fraction(stages: int, microbatches: int, repeats: int = 1) -> float:
    """Share of stage-iterations spent idle (filling or draining the pipeline)."""
    return (stages - 1) / (repeats * microbatches + stages - 1)


def _split(x, m: int):
    return x.reshape((x.shape[0] // m, m) + x.shape[1:]).swapaxes(0, 1)


def _merge(x):
    return x.swapaxes(0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _stage_view(layer_params, stages: int, repeats: int):
    """(L, ...) -> (repeats, stages, L / (repeats * stages), ...) with stage s holding groups s, S+s, ..."""
    def view(p):
        per = p.shape[0] // (stages * repeats)
        p = p.reshape((repeats, stages, per) + p.shape[1:])
        return nn.with_logical_constraint(p, (None, "stage", None) + (None,) * (p.ndim - 3))
    return jax.tree.map(view, layer_params)


def pipeline(layer_fn, layer_params, carry, stages: int, microbatches: int, repeats: int = 1):
    """Applies the L stacked layers to `carry` (a pytree of (B, ...) arrays, the activation among them) in
    pipeline order; `layer_fn(params_of_one_layer, carry) -> carry`. Equal to scanning the layers over the
    whole batch, up to floating-point reassociation. With repeats > 1, microbatches >= stages."""
    S, M, R = stages, microbatches, repeats
    params = _stage_view(layer_params, S, R)  # (R, S, per, ...)

    def stage_fn(stage_params, group, stage_carry):  # one stage applies layer group `group`, layer by layer
        chosen = jax.tree.map(lambda p: p[group], stage_params)
        return jax.lax.scan(lambda c, p: (layer_fn(p, c), None), stage_carry, chosen)[0]

    run_stages = jax.vmap(stage_fn, in_axes=(1, 0, 0))  # over the stage axis: each device its own stage
    inputs = jax.tree.map(lambda x: _split(x, M), carry)  # (M, B/M, ...)
    buffer = jax.tree.map(lambda x: jnp.zeros((S,) + x.shape[1:], x.dtype), inputs)
    constrain = lambda tree: jax.tree.map(
        lambda b: nn.with_logical_constraint(b, ("stage", "batch") + (None,) * (b.ndim - 2)), tree)

    def iteration(state, t):
        buffer, done = state  # done[m]: micro-batch m as it last left the final stage
        # Stage 0 takes micro-batch t mod M: fresh in round 0, back from the ring in later rounds (it left
        # the last stage at least one iteration ago because M >= S).
        slot0 = jax.tree.map(lambda x, d: jnp.where(t < M, x[t % M], d[t % M]), inputs, done)
        buffer = constrain(jax.tree.map(lambda b, f: jnp.concatenate([f[None], b[:-1]], axis=0), buffer, slot0))
        group = jnp.clip((t - jnp.arange(S)) // M, 0, R - 1)  # the round each stage's micro-batch is on
        buffer = constrain(run_stages(params, group, buffer))
        leaving = t - (S - 1)  # the pass (round * M + micro-batch) leaving the last stage now
        valid = (leaving >= 0) & (leaving < R * M)
        done = jax.tree.map(lambda d, b: jnp.where(valid, d.at[leaving % M].set(b[-1]), d), done, buffer)
        return (buffer, done), None

    done = jax.tree.map(jnp.zeros_like, inputs)
    (_, done), _ = jax.lax.scan(iteration, (buffer, done), jnp.arange(R * M + S - 1))
    return jax.tree.map(_merge, done)
