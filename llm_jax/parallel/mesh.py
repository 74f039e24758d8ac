"""Device mesh from the config and the mapping of logical axis names to mesh shardings."""

from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from llm_jax.config import MESH_AXES, mesh_shape


def make_mesh(cfg, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices (or `devices`), with Auto axes for GSPMD propagation."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(cfg, len(devices))
    try:
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):  # unusual topologies: plain order is still correct
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def rules_tuple(cfg) -> tuple:
    return tuple((name, tuple(t) if isinstance(t, list) else t) for name, t in cfg.mesh.rules)


@contextlib.contextmanager
def activate(mesh: Mesh, rules):
    """Mesh + logical rules for tracing: `with_logical_constraint` inside the model resolves against these."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def _axis_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    axes = axes if isinstance(axes, tuple) else (axes,)
    return math.prod(mesh.shape[a] for a in axes)


def fit_spec(spec: PartitionSpec, shape, mesh: Mesh) -> PartitionSpec:
    """Drops the sharding of any dimension the mesh axes do not divide (e.g. 1 KV head over tensor=4:
    replicate it, as MQA with tensor parallelism does)."""
    entries = list(spec) + [None] * (len(shape) - len(spec))
    return PartitionSpec(*[a if dim % _axis_size(mesh, a) == 0 else None for a, dim in zip(entries, shape)])


def logical_shardings(abstract_boxed, mesh: Mesh, rules):
    """NamedShardings for an (abstract) tree of LogicallyPartitioned leaves; unboxed leaves are replicated."""
    logical = nn.get_partition_spec(abstract_boxed)
    mesh_specs = nn.logical_to_mesh(logical, rules)
    shapes = nn.unbox(abstract_boxed)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, fit_spec(spec, x.shape, mesh)),
        mesh_specs, shapes, is_leaf=lambda s: isinstance(s, PartitionSpec))


def batch_sharding(mesh: Mesh, rules, ndim: int = 2) -> NamedSharding:
    spec = nn.logical_to_mesh_axes(("batch", "length") + (None,) * (ndim - 2), rules)
    return NamedSharding(mesh, spec)
