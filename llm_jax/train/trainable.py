"""The whole trainable thing, built once from a config: mesh, model, objective, optimizer, sharded abstract state
and the jitted steps. Training, the benchmarks, `estimate --compile`, checkpoint tools and the tests all use
`build_trainable`; nothing assembles these pieces by hand.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
import optax

from llm_jax.errors import UserError
from llm_jax.models import build_model, peft
from llm_jax.objectives import Objective, field_specs, get_objective
from llm_jax.parallel.mesh import activate, batch_sharding, make_mesh, rules_tuple
from llm_jax.train.optimizer import make_optimizer, schedule, trainable_mask
from llm_jax.train.state import TrainState, abstract_key, abstract_state, init_params, init_state
from llm_jax.train.step import make_eval_step, make_train_step


def use_dynamic_loss_scale(cfg) -> bool:
    return cfg.train.loss_scaling == "dynamic" or (cfg.train.loss_scaling == "auto" and cfg.model.dtype == "float16")


@dataclasses.dataclass
class Trainable:
    """What a run trains, on which devices, and how: see `build_trainable`."""
    cfg: Any
    mesh: jax.sharding.Mesh
    rules: tuple
    model: nn.Module
    objective: Objective
    tx: optax.GradientTransformation
    schedule: Callable
    loss_scale: float
    mask: Any                 # tree of bools over the parameters (None: everything trains)
    abstract: TrainState      # jax.ShapeDtypeStructs carrying their shardings
    shardings: TrainState
    batch_shardings: dict
    batch_specs: dict         # {field: (global shape, dtype)}: objectives.field_specs
    train_step: Callable      # jitted (state, batch) -> (state, metrics); donates the state
    eval_step: Callable       # jitted (params, batch) -> (loss sum, weight sum, {metric: (sum, count)})

    def activate(self):
        """The context the steps must be traced and run in (mesh + logical axis rules)."""
        return activate(self.mesh, self.rules)

    def init_state(self, seed: int | None = None) -> TrainState:
        """A fresh state, created directly on its shards."""
        seed = self.cfg.train.seed if seed is None else seed
        state, _ = init_state(self.model, self.tx, self.cfg.model.seq_len, self.loss_scale, seed, self.mesh,
                              self.rules, self.mask)
        return state

    def to_device(self, batch: dict) -> dict:
        """This process's rows of a batch, as global arrays laid out for the step (the fields the objective
        reads: MLM, for one, has no use for the loader's next-token targets). A field whose dtype or shape past the
        batch axis is not the objective's is an error that names it."""
        for k, v in batch.items():
            if k in self.batch_specs:
                shape, dtype = self.batch_specs[k]
                v = np.asarray(v)
                if v.shape[1:] != shape[1:] or jax.dtypes.canonicalize_dtype(v.dtype) != np.dtype(dtype):
                    raise UserError(f"batch field {k!r}: {v.dtype} {tuple(v.shape)} per process, but "
                                    f"train.objective={self.objective.name!r} trains on {dtype} (rows, "
                                    f"{', '.join(map(str, shape[1:]))}) under this config")
        return {k: jax.make_array_from_process_local_data(self.batch_shardings[k], v) for k, v in batch.items()
                if k in self.batch_shardings}

    def abstract_batch(self) -> dict:
        return {k: jax.ShapeDtypeStruct(*self.batch_specs[k], sharding=v) for k, v in self.batch_shardings.items()}

    def sizes(self) -> dict:
        """{"params", "trainable" (parameters that get updates), "optimizer_bytes" (the optimizer state)}."""
        count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
        trainable = self.abstract.params if self.mask is None else [
            p for p, keep in zip(jax.tree.leaves(self.abstract.params), jax.tree.leaves(self.mask)) if keep]
        return {"params": count(self.abstract.params), "trainable": count(trainable),
                "optimizer_bytes": sum(int(np.prod(x.shape)) * x.dtype.itemsize
                                       for x in jax.tree.leaves(self.abstract.opt_state))}

    def compile_train_step(self):
        """The train step lowered and compiled for this mesh without any data (memory and cost analyses)."""
        with self.activate():
            return self.train_step.lower(self.abstract, self.abstract_batch()).compile()


def build_trainable(cfg, mesh: jax.sharding.Mesh | None = None) -> Trainable:
    """Everything a run of `cfg` trains with, on `mesh` (default: the config's mesh over this machine's devices).
    Nothing is allocated: the state exists only as its abstract shape until `init_state` or a restore."""
    if cfg.model.weight_quant != "none" and cfg.model.peft == "none":
        raise UserError(f"model.weight_quant={cfg.model.weight_quant!r}: quantized weights cannot be trained; set "
                        f"model.peft=lora to train adapters over them (QLoRA with nf4), or train the float model")
    mesh = mesh if mesh is not None else make_mesh(cfg)
    rules = rules_tuple(cfg)
    model = build_model(cfg.model, cfg.mesh)
    objective = get_objective(cfg.train.objective, cfg.train)
    tx = make_optimizer(cfg.train, cfg.model)
    scale = cfg.train.loss_scale_init if use_dynamic_loss_scale(cfg) else 1.0
    with activate(mesh, rules):
        shapes = jax.eval_shape(lambda r: nn.unbox(init_params(model, cfg.model.seq_len, r)), abstract_key())
    mask = trainable_mask(shapes, cfg.train.trainable,
                          None if cfg.model.peft == "none" else peft.trainable_pattern(cfg.model.peft))
    abstract, shardings = abstract_state(model, tx, cfg.model.seq_len, scale, mesh, rules, mask)
    batch_specs = field_specs(objective, cfg)
    batch_shardings = {name: batch_sharding(mesh, rules, len(shape)) for name, (shape, _) in batch_specs.items()}
    sched = schedule(cfg.train)
    step = make_train_step(model, objective, tx, sched, cfg.train, use_dynamic_loss_scale(cfg), mask)
    train_step = jax.jit(step, in_shardings=(shardings, batch_shardings), out_shardings=(shardings, None),
                         donate_argnums=0)
    eval_step = jax.jit(make_eval_step(model, objective), in_shardings=(shardings.params, batch_shardings))
    return Trainable(cfg, mesh, rules, model, objective, tx, sched, scale, mask, abstract, shardings,
                     batch_shardings, batch_specs, train_step, eval_step)


__all__ = ["Trainable", "build_trainable", "use_dynamic_loss_scale"]
