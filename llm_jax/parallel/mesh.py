"""Device mesh from the config and the mapping of logical axis names to mesh shardings."""

from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from llm_jax.config import MESH_AXES, mesh_layout


def _grid(shape, devices):
    try:
        from jax.experimental import mesh_utils
        return mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):  # unusual topologies: plain order is still correct
        return np.asarray(devices).reshape(shape)


def slices_of(devices, count: int) -> list[list]:
    """Devices grouped by slice: TPU `slice_index` where devices have one, else by process, else in order."""
    for key in ("slice_index", "process_index"):
        values = sorted({getattr(d, key, None) for d in devices} - {None})
        if len(values) == count:
            return [[d for d in devices if getattr(d, key, None) == v] for v in values]
    per = len(devices) // count
    return [devices[i * per:(i + 1) * per] for i in range(count)]


def make_mesh(cfg, devices=None) -> Mesh:
    """The (stage, data, fsdp, expert, context, tensor) mesh over all devices (or `devices`), with Auto axes for GSPMD.

    With mesh.dcn_* > 1 (multi-slice) every slice gets the within-slice grid and slices are laid side by side
    along each axis, so collectives over a within-slice axis never leave the slice."""
    devices = list(jax.devices() if devices is None else devices)
    ici, dcn = mesh_layout(cfg, len(devices))
    if math.prod(dcn) == 1:
        return Mesh(_grid(ici, devices), MESH_AXES)
    per_slice = np.stack([_grid(ici, s) for s in slices_of(devices, math.prod(dcn))])  # (slices, *ici)
    per_slice = per_slice.reshape(dcn + ici)
    n = len(MESH_AXES)
    interleaved = per_slice.transpose([k for axis in range(n) for k in (axis, n + axis)])  # (dcn0, ici0, ...)
    return Mesh(interleaved.reshape([d * i for d, i in zip(dcn, ici)]), MESH_AXES)


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


def unboxed(tree):
    """The values of a tree of LogicallyPartitioned boxes, without the sharding constraint `nn.unbox` applies
    under an active mesh (which abstract values cannot take)."""
    return jax.tree.map(lambda x: x.value if isinstance(x, nn.meta.AxisMetadata) else x, tree,
                        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def logical_shardings(abstract_boxed, mesh: Mesh, rules):
    """NamedShardings for an (abstract) tree of LogicallyPartitioned leaves; unboxed leaves are replicated."""
    logical = nn.get_partition_spec(abstract_boxed)
    mesh_specs = nn.logical_to_mesh(logical, rules)
    shapes = unboxed(abstract_boxed)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, fit_spec(spec, x.shape, mesh)),
        mesh_specs, shapes, is_leaf=lambda s: isinstance(s, PartitionSpec))


def batch_sharding(mesh: Mesh, rules, ndim: int = 2) -> NamedSharding:
    spec = nn.logical_to_mesh_axes(("batch", "length") + (None,) * (ndim - 2), rules)
    return NamedSharding(mesh, spec)
