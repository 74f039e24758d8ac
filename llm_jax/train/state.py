"""Training state and its sharded initialisation (parameters are created directly on their shards)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from llm_jax.parallel.mesh import activate, logical_shardings, unboxed


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray        # int32: steps taken (a skipped update still counts; a halted run stops counting)
    params: Any
    opt_state: Any
    loss_scale: jnp.ndarray  # float32; stays 1 unless dynamic loss scaling is on
    good_steps: jnp.ndarray  # int32: finite steps since the loss scale last changed
    loss_ema: jnp.ndarray    # float32: running mean of the loss, for the spike guard (0 until the first step)
    spikes: jnp.ndarray      # int32: loss spikes in a row
    skipped: jnp.ndarray     # int32: updates skipped so far (non-finite, spike, or float16 overflow)
    halted: jnp.ndarray      # bool: a bad step under train.nonfinite=stop (or too many spikes); frozen since


def new_counters(loss_scale: float) -> dict:
    return {"loss_scale": jnp.asarray(loss_scale, jnp.float32), "good_steps": jnp.zeros((), jnp.int32),
            "loss_ema": jnp.zeros((), jnp.float32), "spikes": jnp.zeros((), jnp.int32),
            "skipped": jnp.zeros((), jnp.int32), "halted": jnp.zeros((), jnp.bool_)}


def init_params(model, seq_len: int, rng):
    """The model's (boxed: logically partitioned) parameters."""
    return model.init({"params": rng}, jnp.zeros((1, seq_len), jnp.int32))["params"]


def _is_box(x) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


def _init_boxed(model, tx, seq_len: int, loss_scale: float, rng, mask=None):
    """State with optimizer state for the trainable parameters only (`mask`: unboxed tree of bools, or None)."""
    params = init_params(model, seq_len, rng)
    trainable = params if mask is None else jax.tree.map(lambda p, keep: p if keep else None, params, mask,
                                                         is_leaf=_is_box)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(trainable),
                      **new_counters(loss_scale))


def abstract_key() -> jax.ShapeDtypeStruct:
    """A PRNG key's shape: for `eval_shape` under a mesh whose devices may exist only for the compiler."""
    return jax.eval_shape(lambda: jax.random.key(0))


def abstract_state(model, tx, seq_len: int, loss_scale: float, mesh, rules, mask=None):
    """(abstract unboxed state, its NamedShardings) without allocating anything."""
    with activate(mesh, rules):
        boxed = jax.eval_shape(lambda r: _init_boxed(model, tx, seq_len, loss_scale, r, mask), abstract_key())
    shardings = logical_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            unboxed(boxed), shardings)
    return abstract, shardings


def init_state(model, tx, seq_len: int, loss_scale: float, seed: int, mesh, rules, mask=None):
    """Initialises parameters and optimizer state inside one jit whose outputs are already sharded."""
    _, shardings = abstract_state(model, tx, seq_len, loss_scale, mesh, rules, mask)
    init = jax.jit(lambda r: nn.unbox(_init_boxed(model, tx, seq_len, loss_scale, r, mask)), out_shardings=shardings)
    with activate(mesh, rules):
        return init(jax.random.key(seed)), shardings


def state_bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
