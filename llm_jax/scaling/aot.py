"""`llm-jax compile`: the real train step, lowered and compiled ahead of time without data — for this machine's
devices or for a TPU slice that is not here (`--topology v5p-256`): XLA's own memory, FLOP and collective counts.

A TPU target is built from `jax.experimental.topologies` (its devices exist only for the compiler; libtpu, the
`tpu` extra, brings the real TPU compiler to a CPU machine), the mesh from those devices with the config's
rules (`make_mesh`, multi-slice with `--num-slices` and `mesh.dcn_*`), and the step from `build_trainable` —
the same builder the train loop uses, pipeline stages included. GPU targets cannot be compiled without a GPU
(XLA's GPU compiler needs the device present); for them `llm-jax estimate` gives the analytic figures.

What is reported per chip, from `memory_analysis()`: argument, output, temporary and generated-code bytes, and
what the step needs resident (`bytes_per_chip` = argument + output - aliased + temporary + code: the donated
state is aliased to the new one); from `cost_analysis()`: FLOPs; from the optimized HLO text: every collective
with its result bytes. XLA counts a `while` loop's body once — the scanned layer stack — so compiled FLOPs and
the static collective counts cover one layer group; each collective inside a loop is also reported multiplied by
the loop's known trip count (`per_step`).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import math
import os
import re
import sys

import jax

from llm_jax.config import MESH_AXES, ConfigError, load_config, mesh_shape
from llm_jax.errors import UserError
from llm_jax.models.accounting import flops_per_token as analytic_flops_per_token
from llm_jax.parallel.mesh import make_mesh
from llm_jax.scaling.memory import parse_topology
from llm_jax.train.trainable import build_trainable

# chip generation -> (jax topology prefix, dimensions of its torus, chip_config_name)
TPU_TOPOLOGY = {"TPU v4": ("v4", 3, "megacore"), "TPU v5p": ("v5p", 3, None), "TPU v5e": ("v5e", 2, None),
                "TPU v6e": ("v6e", 2, None)}
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
               "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "s4": 0.5, "u4": 0.5, "f8e4m3fn": 1, "f8e5m2": 1}


# The TPU compiler's refusal: "...the total memory required for HLO temporaries (7.99T) exceeds available HBM"
_OUT_OF_MEMORY = re.compile(r"RESOURCE_EXHAUSTED: Ran out of memory.*?\((\d+(?:\.\d+)?)([KMGTP]?)\) exceeds")


# The pod layouts docs/parallelism.md recommends: (config, topology, slices, overrides). A test compiles each for
# its TPU target and asserts it fits; experiments/pod_layouts/compile_table.py writes the docs' table from them.
RECOMMENDED_LAYOUTS = {
    "1B on v5e-16": ("llama_1b", "v5e-16", 1, ["train.micro_batches=16"]),
    "1B, 2 pipeline stages, v5p-32": ("llama_1b", "v5p-32", 1,
                                      ["mesh.stage=2", "mesh.fsdp=-1", "train.micro_batches=4"]),
    "1B on 2 slices of v5e-16": ("llama_1b", "v5e-16", 2, ["mesh.dcn_data=2", "train.micro_batches=16"]),
    "7B on v5p-128": ("llama_7b", "v5p-128", 1, ["train.micro_batches=2"]),
    "70B on v5p-512": ("llama_70b", "v5p-512", 1, ["train.micro_batches=2", "mesh.fsdp=64", "mesh.tensor=4"]),
}


class CompileTargetError(UserError):
    """A target that cannot be compiled for here (GPU names, no libtpu, an odd chip count)."""


def torus_dims(chips: int, ndim: int) -> tuple[int, ...]:
    """The slice shape of a chip count, as TPU slices are named: powers of two spread over `ndim` torus
    dimensions, smallest first, a dimension of 1 last (4 chips, 3 dims -> 2x2x1; 64 -> 4x4x4; 128 -> 4x4x8;
    16 chips, 2 dims -> 4x4)."""
    if chips < 1 or chips & (chips - 1):
        raise CompileTargetError(f"{chips} chips: TPU slices have a power-of-two chip count")
    dims = [1] * ndim
    for _ in range(int(math.log2(chips))):
        dims[dims.index(min(dims))] *= 2
    return tuple(sorted(d for d in dims if d > 1)) + (1,) * dims.count(1)


def tpu_devices(target: dict, num_slices: int = 1) -> list:
    """The devices of a TPU slice (`num_slices` of them) as the TPU compiler sees it; nothing runs on them."""
    if target["device_kind"] not in TPU_TOPOLOGY:
        raise CompileTargetError(
            f"--topology {target['topology']}: {target['device_kind']} is a GPU; XLA's GPU compiler needs the GPU "
            f"present, so compile on a GPU host (llm-jax compile without --topology) — here, `llm-jax estimate "
            f"--topology {target['topology']}` gives the analytic per-device memory and step time")
    if importlib.util.find_spec("libtpu") is None:
        raise CompileTargetError("compiling for a TPU needs the TPU compiler (libtpu): pip install -e '.[tpu]'")
    prefix, ndim, chip_config = TPU_TOPOLOGY[target["device_kind"]]
    name = f"{prefix}:{'x'.join(map(str, torus_dims(target['chips'], ndim)))}"
    from jax.experimental import topologies
    kwargs = {"chip_config_name": chip_config} if chip_config else {}
    with _quiet_stderr():  # libtpu warns that this machine is no TPU VM (no accelerator type, no workers)
        return list(topologies.get_topology_desc(platform="tpu", topology_name=name, num_slices=num_slices,
                                                 **kwargs).devices)


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null for a while: what C++ libraries print there, Python cannot filter."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def compile_train_step(cfg, devices=None):
    """The compiled train step of `cfg` on `devices` (default: this machine's)."""
    devices = list(jax.devices() if devices is None else devices)
    return build_trainable(cfg, make_mesh(cfg, devices)).compile_train_step()


def memory(compiled) -> dict:
    """memory_analysis() per device, and what the step needs resident."""
    a = compiled.memory_analysis()
    out = {"argument_bytes": a.argument_size_in_bytes, "output_bytes": a.output_size_in_bytes,
           "temp_bytes": a.temp_size_in_bytes, "alias_bytes": a.alias_size_in_bytes,
           "generated_code_bytes": a.generated_code_size_in_bytes}
    out["bytes_per_chip"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"] + out["temp_bytes"]
                             + out["generated_code_bytes"])
    return out


def compiled_flops(compiled) -> float:
    """cost_analysis() FLOPs of one step on one device (a `while` body counted once)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def flops_per_token(compiled, cfg, n_devices: int | None = None) -> float:
    """Compiled FLOPs of one step over all devices per trained token. XLA counts a while loop's body once, so a
    layer scan must be unrolled (model.scan_unroll = n_layers) for this to cover every layer."""
    n_devices = jax.device_count() if n_devices is None else n_devices
    return compiled_flops(compiled) * n_devices / (cfg.train.batch_size * cfg.model.seq_len)


def _shape_bytes(type_text: str, op: str) -> float:
    """Bytes of an HLO result: one array type or a tuple of them (combined collectives: summed). An async
    all-gather / collective-permute start returns (operands, results, context): only the results count."""
    shapes = [(dtype, dims) for dtype, dims in re.findall(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]", type_text)
              if dtype in DTYPE_BYTES]
    if op in ("all-gather-start", "collective-permute-start"):
        shapes = [s for s in shapes if s[1]]  # drop the scalar context
        shapes = shapes[len(shapes) // 2:]
    return sum(DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d) for dtype, dims in shapes)


_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = (.+?) ([a-z\-]+)\(")
_CALLS = re.compile(r"\b(calls|to_apply|body|condition|branch_computations|called_computations)=\{?%?([\w.\-]+)")
_WHILE = re.compile(r"\bwhile\(.*\bcondition=%?([\w.\-]+), body=%?([\w.\-]+)")
_BOUND = re.compile(r"s32\[\]\S* constant\((\d+)\)")


def _computations(hlo_text: str) -> tuple[dict, str | None]:
    """{name: its instruction lines} of an HLO module, and the entry computation's name."""
    comps, entry, name = {}, None, None
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head and not line.startswith(" "):
            name = head.group(1)
            comps[name] = []
            entry = name if line.startswith("ENTRY") else entry
        elif name is not None and line.startswith(" "):
            comps[name].append(line)
    return comps, entry


def _trip_count(condition: list[str]) -> int:
    """A `while` condition `i < N` with N an s32 constant -> N (a scan's counter runs 0..N-1); else 1."""
    bounds = [int(m.group(1)) for line in condition for m in [_BOUND.search(line)] if m]
    compares = any("compare(" in line and "direction=LT" in line for line in condition)
    return bounds[0] if compares and len(bounds) == 1 else 1


def _multiplicity(comps: dict, entry: str) -> dict:
    """How often each computation runs per call of the entry: the sum over its call sites of how often the
    caller runs, a `while` body's call site counting its trip count."""
    callers = collections.defaultdict(list)  # callee -> [(caller, factor)]
    for name, lines in comps.items():
        for line in lines:
            loop = _WHILE.search(line)
            trip = _trip_count(comps.get(loop.group(1), [])) if loop else 1
            for kind, callee in _CALLS.findall(line):
                callers[callee].append((name, trip if kind == "body" else 1))
    times = {entry: 1}

    def runs(name: str) -> int:  # HLO call graphs are acyclic
        if name not in times:
            times[name] = sum(runs(caller) * factor for caller, factor in callers.get(name, ()))
        return times[name]

    return {name: runs(name) for name in comps}


def collectives(hlo_text: str) -> dict:
    """{op: {"count", "bytes", "per_step_count", "per_step_bytes"}} over the optimized HLO: `count` / `bytes`
    as written (a loop body once), `per_step_*` with each op times how often its computation runs (a `while`
    body: its trip count, read from the loop condition `i < N`)."""
    comps, entry = _computations(hlo_text)
    times = _multiplicity(comps, entry) if entry else collections.Counter()
    out = {op: collections.Counter() for op in COLLECTIVES}
    for name, lines in comps.items():
        for line in lines:
            inst = _INSTRUCTION.match(line)
            op = inst.group(2).removesuffix("-start") if inst else None
            if op in COLLECTIVES:
                size, runs = _shape_bytes(inst.group(1), inst.group(2)), times.get(name, 1)
                out[op].update(count=1, bytes=size, per_step_count=runs, per_step_bytes=size * runs)
    return {op: {k: int(c[k]) for k in ("count", "bytes", "per_step_count", "per_step_bytes")} for op, c in out.items()}


def report(cfg, compiled, hlo_text: str, n_devices: int, hbm_bytes: int | None) -> dict:
    """The summary `llm-jax compile` prints and writes (`hlo_text`: the compiled step's `as_text()`)."""
    tokens = cfg.train.batch_size * cfg.model.seq_len
    out = {"config": cfg.name, "devices": n_devices, "mesh": mesh_shape(cfg, n_devices),
           **memory(compiled), "hbm_bytes": hbm_bytes}
    if hbm_bytes:
        out["fits"] = out["bytes_per_chip"] <= hbm_bytes
        out["headroom_bytes"] = hbm_bytes - out["bytes_per_chip"]
    out["compiled_flops"] = compiled_flops(compiled) * n_devices
    out["analytic_flops"] = analytic_flops_per_token(cfg.model) * tokens
    out["layers_scanned"] = cfg.model.scan_unroll < cfg.model.n_layers  # then compiled_flops cover one group
    # Pallas/Mosaic kernels (splash attention: forward, dq, dkv) are opaque custom calls: the cost analysis
    # counts none of their FLOPs, so compiled_flops then leaves out the attention matmuls
    out["kernel_calls"] = hlo_text.count('custom_call_target="tpu_custom_call"')
    out["collectives"] = collectives(hlo_text)
    return out


def advice(cfg, out: dict) -> str:
    """One line on what would make a step that does not fit fit."""
    over = -out["headroom_bytes"] / 2**30
    mesh, knobs = out["mesh"], []
    if mesh.get("data", 1) > 1:
        knobs.append(f"move data parallelism into fsdp (mesh.data=1 mesh.fsdp={mesh['data'] * mesh.get('fsdp', 1)})")
    elif out["devices"] > mesh.get("fsdp", 1) * mesh.get("tensor", 1):
        knobs.append("a wider mesh.fsdp")
    if cfg.model.remat != "full":
        knobs.append("model.remat=full")
    knobs.append(f"train.micro_batches={cfg.train.micro_batches * 2} (fewer activations at once)")
    knobs.append("more chips")
    needs = "the TPU compiler refused it: it" if "compiler_error" in out else "the step"
    return (f"does not fit: {needs} needs {out['bytes_per_chip'] / 2**30:,.2f} GiB per chip, "
            f"{over:,.2f} GiB more than the chip's {out['hbm_bytes'] / 2**30:,.0f} GiB; try {', '.join(knobs)}")


def local_hbm_bytes() -> int | None:
    """Memory of this machine's first device, where the runtime says (GPUs, TPUs); None on CPU."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def compile_for(cfg_path: str, overrides: dict, topology: str | None, num_slices: int, unroll: bool):
    """(config, the compiled step's optimized HLO text or None where the TPU compiler refused it for lack of
    memory, summary) of `llm-jax compile`."""
    if topology:
        target = parse_topology(topology)
        devices = tpu_devices(target, num_slices)
        target["num_slices"] = num_slices
    else:
        if num_slices != 1:
            raise CompileTargetError("--num-slices needs --topology (the slices of a TPU target)")
        devices = jax.devices()
        target = {"topology": None, "device_kind": devices[0].device_kind, "hbm_bytes": local_hbm_bytes()}
    cfg = load_config(cfg_path, overrides, n_devices=len(devices))
    slices = math.prod(cfg.mesh[f"dcn_{a}"] for a in MESH_AXES)
    if slices != num_slices:
        raise ConfigError(f"--num-slices {num_slices} but the mesh.dcn_* axes multiply to {slices}; set e.g. "
                          f"--config.mesh.dcn_data={num_slices}")
    if unroll:
        cfg.model.scan_unroll = cfg.model.n_layers
    head = {k: v for k, v in target.items() if k in ("topology", "device_kind", "num_slices")}
    try:
        step = compile_train_step(cfg, devices)
    except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses a program that cannot fit at all
        needed = _OUT_OF_MEMORY.search(str(e))
        if not needed:
            raise
        need = int(float(needed.group(1)) * 1024 ** " KMGTP".index(needed.group(2) or " "))
        hbm = target.get("hbm_bytes")
        return cfg, None, {**head, "config": cfg.name, "devices": len(devices), "mesh": mesh_shape(cfg, len(devices)),
                           "fits": False, "hbm_bytes": hbm, "bytes_per_chip": need,
                           "headroom_bytes": (hbm or need) - need, "compiler_error": str(e).splitlines()[0][:300]}
    hlo_text = step.as_text()
    return cfg, hlo_text, {**head, **report(cfg, step, hlo_text, len(devices), target.get("hbm_bytes"))}
