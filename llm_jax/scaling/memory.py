"""Per-device memory and step time of a config on a device count or a named topology (the guide's Memory
Estimation), without any accelerator: a job is sized before it is launched.

Parameters, optimizer state and gradients are exact: every parameter's shard is computed from the config's
own logical-axis rules and mesh, as the sharded initialisation would lay it out. Activations follow
Korthikanti et al. (2022): per layer and token, h·(34 + 5·a·s/h) bytes of 16-bit activations without
recomputation (tensor parallelism t divides most of it: h·(10 + 24/t + 5·a·s/(h·t))), 2·h with full
recomputation; float32 compute doubles them; the float32 logits and their gradient come on top. The 5·a·s/h
term is the `xla` attention path's L x L scores and softmax; the blockwise (flash) path keeps O(L·block) per layer
and drops it. Context parallelism (mesh.context = c) divides every per-token term by c and adds the all-gathered
K and V of the whole sequence per layer.
"""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax import config as config_lib
from llm_jax.errors import UserError
from llm_jax.hardware import PEAK_FLOPS
from llm_jax.models import build_model
from llm_jax.models.attention import BLOCKWISE_FROM
from llm_jax.models.masks import MaskArrays, MaskSpec
from llm_jax.models.splash import unsupported as splash_blocker
from llm_jax.models.accounting import (active_params, device_hours, flops_per_token, non_embedding_params, param_count,
                                       training_time_days)
from llm_jax.parallel.mesh import fit_spec, rules_tuple

# name prefix -> (device kind for the peak table, TensorCores per chip (TPU names count cores), HBM GiB per chip)
TOPOLOGIES = {
    "v4": ("TPU v4", 2, 32), "v5p": ("TPU v5p", 2, 95), "v5e": ("TPU v5e", 1, 16), "v5litepod": ("TPU v5e", 1, 16),
    "v6e": ("TPU v6e", 1, 32), "a100": ("A100", 1, 80), "h100": ("H100", 1, 80), "h200": ("H200", 1, 141),
}


class TopologyError(UserError):
    """An unknown or malformed --topology."""


def parse_topology(name: str) -> dict:
    """'v5p-256' (256 TensorCores = 128 chips), 'v5e-64', 'h100-16' (16 GPUs) -> chips, kind, peak, HBM."""
    match = re.fullmatch(r"([a-z0-9]+)-(\d+)", name.lower())
    if not match or match.group(1) not in TOPOLOGIES:
        raise TopologyError(f"--topology {name!r}: expected NAME-COUNT with NAME in {', '.join(TOPOLOGIES)}")
    kind, cores_per_chip, hbm = TOPOLOGIES[match.group(1)]
    cores = int(match.group(2))
    if cores % cores_per_chip:
        raise TopologyError(f"--topology {name!r}: {match.group(1)} counts {cores_per_chip} cores per chip")
    return {"topology": name, "chips": cores // cores_per_chip, "device_kind": kind, "peak_flops": PEAK_FLOPS[kind],
            "hbm_bytes": hbm * 2**30}


class _MeshShape:
    def __init__(self, shape: dict):
        self.shape = shape


def parameter_bytes_per_device(cfg, mesh_sizes: dict) -> int:
    """Bytes of one device's parameter shards under the config's rules (parameters in model.param_dtype)."""
    model = build_model(cfg.model)
    boxed = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))["params"], jax.random.key(0))
    specs = nn.logical_to_mesh(nn.get_partition_spec(boxed), rules_tuple(cfg))
    shapes = nn.unbox(boxed)
    mesh = _MeshShape(mesh_sizes)
    total = 0
    for spec, leaf in zip(jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec)),
                          jax.tree.leaves(shapes)):
        fitted = fit_spec(spec, leaf.shape, mesh)
        shard = 1
        for dim, axes in zip(leaf.shape, list(fitted) + [None] * (len(leaf.shape) - len(fitted))):
            names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
            shard_count = math.prod(mesh_sizes[a] for a in names)
            shard *= dim // shard_count
        total += shard * leaf.dtype.itemsize
    return total


def attention_impl(m, platform: str = "cpu") -> str:
    """The attention path a config's step takes on a `platform` target (`auto` as `attention.choose_impl`
    resolves it there). splash (TPU) and cuDNN (GPU) keep no score matrix, like the blockwise path."""
    if m.attention_impl != "auto":
        return m.attention_impl
    pattern = MaskSpec(window=m.attention_window, stride=m.attention_stride, global_tokens=m.attention_global_tokens)
    if platform == "tpu" and not splash_blocker(pattern, MaskArrays(), False, m.seq_len, m.attention_block):
        return "splash"
    windowed = 0 < m.attention_window < m.seq_len
    return "blockwise" if m.seq_len >= BLOCKWISE_FROM or windowed else "xla"


def activation_bytes_per_device(cfg, mesh_sizes: dict, platform: str = "cpu") -> int:
    m, t = cfg.model, cfg.train
    rows = mesh_sizes["data"] * mesh_sizes["fsdp"] * mesh_sizes["expert"]  # the axes the batch is split over
    sequences = t.batch_size // t.micro_batches // rows
    tokens = sequences * m.seq_len // mesh_sizes["context"]
    if mesh_sizes["stage"] > 1:  # a stage holds its layers' activations for every micro-batch in flight
        layers = m.n_layers // mesh_sizes["stage"]
    else:
        layers = m.n_layers
    h, a, s, tp = m.d_model, m.n_heads, m.seq_len, mesh_sizes["tensor"]
    scores = 5 * a * s / h if attention_impl(m, platform) == "xla" else 0.0  # per token, in units of h
    width = 2 if m.dtype != "float32" else 4
    if m.remat == "full":
        per_token_layer = 2 * h
    elif tp > 1:
        per_token_layer = h * (10 + 24 / tp + scores / tp)
    else:
        per_token_layer = h * (34 + scores)
    if mesh_sizes["context"] > 1 and m.remat != "full":  # K and V of the whole sequence, gathered per layer
        per_token_layer += 2 * m.n_kv_heads * m.head_dim / tp * mesh_sizes["context"]
    if m.remat == "dots":  # matmul outputs kept, element-wise intermediates recomputed: about half
        per_token_layer /= 2
    logits = tokens * m.vocab_size * 4 * 2 / tp  # float32 logits and their gradient
    return int(tokens * layers * per_token_layer * width / 2 + logits)


def memory_per_device(cfg, devices: int, platform: str = "cpu") -> dict:
    """Bytes per device of parameters, Adam state, float32 gradients, activations, and their total."""
    sizes = config_lib.mesh_shape(cfg, devices)
    params = parameter_bytes_per_device(cfg, sizes)
    opt_width = 2 * 4 / jnp.dtype(cfg.model.param_dtype).itemsize  # Adam: two float32 moments per parameter
    memory = {
        "params": params,
        "optimizer_state": int(params * opt_width),
        "gradients": int(params * 4 / jnp.dtype(cfg.model.param_dtype).itemsize),  # accumulated in float32
        "activations": activation_bytes_per_device(cfg, sizes, platform),
    }
    memory["total"] = sum(memory.values())
    return memory


def fits(total_bytes: float, hbm_bytes: float) -> bool:
    return total_bytes <= 0.9 * hbm_bytes  # leave room for XLA's temporaries and fragmentation


def longest_context(cfg, devices: int, hbm_bytes: float, limit: int = 2 ** 20, platform: str = "cpu") -> int:
    """The longest power-of-two sequence length (from 256 up to `limit`) at which the step still fits with one
    sequence per batch shard (data x fsdp x expert), the mesh, remat and attention implementation as configured
    (`auto` re-resolved per length); 0 when not even 256 tokens fit."""
    sizes = config_lib.mesh_shape(cfg, devices)
    best, length = 0, 256
    while length <= limit:
        trial = cfg.copy_and_resolve_references()
        trial.model.seq_len = length
        trial.train.batch_size, trial.train.micro_batches = sizes["data"] * sizes["fsdp"] * sizes["expert"], 1
        if length % config_lib.mesh_shape(trial, devices)["context"] or \
                not fits(memory_per_device(trial, devices, platform)["total"], hbm_bytes):
            break
        best, length = length, length * 2
    return best


def estimate(cfg, devices: int, peak_flops: float | None, hbm_bytes: float | None, mfu: float,
             platform: str = "cpu") -> dict:
    sizes = config_lib.mesh_shape(cfg, devices)
    memory = memory_per_device(cfg, devices, platform)
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
    out = {"params": param_count(cfg.model), "active_params": active_params(cfg.model),
           "non_embedding_params": non_embedding_params(cfg.model),
           "flops_per_token": flops_per_token(cfg.model), "devices": devices, "mesh": sizes,
           "per_device_bytes": memory, "tokens_per_step": tokens_per_step,
           "attention_impl": attention_impl(cfg.model, platform)}
    if hbm_bytes:
        out["device_memory_bytes"] = hbm_bytes
        out["fits"] = fits(memory["total"], hbm_bytes)
        out["longest_context"] = longest_context(cfg, devices, hbm_bytes, platform=platform)
    if peak_flops:
        step_flops = out["flops_per_token"] * tokens_per_step
        out["mfu"] = mfu
        out["step_seconds"] = step_flops / (peak_flops * devices * mfu)
        out["tokens_per_sec"] = tokens_per_step / out["step_seconds"]
        out["training_flops"] = step_flops * cfg.train.steps
        out["device_hours"] = device_hours(out["training_flops"], peak_flops, mfu)   # the guide's GPU-hours
        out["training_days"] = training_time_days(out["training_flops"], devices, peak_flops, mfu)
    return out
