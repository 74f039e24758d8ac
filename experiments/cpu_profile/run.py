"""Where a CPU training step's time goes: a per-op profile of `configs/bench_cpu.py`'s step, grouped by part.

1. Compiles the bench's train step (the same `build_trainable` as `llm-jax bench train`) and reads the optimized
   HLO: each instruction's opcode, its output shape, the source it came from (`metadata={op_name=...}`) and, for
   dots, its FLOPs (2 x output elements x contracted size).
2. Traces `--steps` steps with `jax.profiler` (XLA:CPU's thunk runtime records one event per executed
   instruction, named after it) and sums each instruction's time.
3. Groups instructions by part — attention, MLP, norms, output head + cross-entropy, embedding, optimizer update,
   other — and by forward / backward, and prints each group's share of the step and, for its dots, the GFLOP/s
   they reach against the float32 2048^2 matmul ceiling measured in the same run.

Run: python experiments/cpu_profile/run.py [--config configs/bench_cpu.py] [--steps 5] [--set KEY=VALUE ...]
     (about a minute on a 2-core CPU; run it on an idle machine)
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from llm_jax import allocator  # noqa: E402

allocator.tune()  # as `llm-jax` does, before jax starts its threads

import jax  # noqa: E402
import numpy as np  # noqa: E402

from llm_jax import config as config_lib  # noqa: E402
from llm_jax.hardware import measure_matmul_flops  # noqa: E402
from llm_jax.models.accounting import flops_per_token  # noqa: E402
from llm_jax.train.trainable import build_trainable  # noqa: E402

# (part, pattern over the instruction's source path), first match wins
PARTS = [("optimizer", r"optax|adam|scale_by|apply_updates|clip|global_norm|tree_map|ema"),
         ("head+loss", r"cross_entropy|log_softmax|logsumexp|logits|/head|attend\b|chunked|output"),
         ("attention", r"attention"),
         ("mlp", r"mlp|gelu|tanh"),
         ("norms", r"norm"),
         ("embedding", r"embed|position")]
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>\([^=]*\)|\S+)\s+"
                         r"(?P<opcode>[\w\-]+)\((?P<rest>.*)$")
COMPUTATION = re.compile(r"^%?(?P<name>[\w.\-]+)\s.*\{\s*$")


def _dims(shape: str) -> list[int]:
    inner = re.match(r"\w+\[([\d,]*)\]", shape)
    return [int(d) for d in inner[1].split(",") if d] if inner else []


def hlo_instructions(text: str) -> dict:
    """name -> {opcode, source, flops} of every instruction of the optimized HLO module; a fusion's flops are
    those of the dots of the computation it calls (XLA:CPU puts matmuls in YNNPACK fusions; a oneDNN custom-call
    would count 0)."""
    out, shapes, computation_flops, computation = {}, {}, collections.Counter(), None
    for line in text.splitlines():
        header = COMPUTATION.match(line)
        if header and "=" not in line.split("{")[0]:
            computation = header["name"]
            continue
        m = INSTRUCTION.match(line)
        if not m:
            continue
        name, shape, opcode, rest = m["name"], m["shape"], m["opcode"], m["rest"]
        shapes[name] = shape
        source = re.search(r'op_name="([^"]*)"', rest)
        flops = 0
        if opcode == "dot":
            lhs = re.match(r"\s*%?([\w.\-]+)", rest)
            lhs_dims = _dims(shapes.get(lhs[1], "")) if lhs else []
            contracted = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
            k = int(np.prod([lhs_dims[int(i)] for i in contracted[1].split(",") if i])) if contracted else 0
            flops = 2 * int(np.prod(_dims(shape) or [1])) * k
            computation_flops[computation] += flops
        called = re.search(r"calls=%?([\w.\-]+)", rest)
        if opcode == "fusion" and called:
            flops = computation_flops[called[1]]
        out[name] = {"opcode": "matmul" if flops else opcode, "source": source[1] if source else "", "flops": flops}
    return out


def part_of(source: str) -> str:
    lowered = source.lower()
    for part, pattern in PARTS:
        if re.search(pattern, lowered):
            return part
    return "other"


def traced_times(directory: str) -> dict:
    """instruction name -> (total microseconds, executions) over the trace (events of XLA:CPU's executor threads;
    an instruction inside a loop body runs once per iteration)."""
    found = sorted(glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True))
    if not found:
        raise SystemExit(f"no trace was written under {directory}")
    path = found[-1]
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    times, counts = collections.Counter(), collections.Counter()
    for e in events:
        thread = threads.get((e.get("pid"), e.get("tid")), "")
        if e.get("ph") == "X" and thread.startswith("tf_XLA") and not e["name"].startswith(("end: ", "Thunk",
                                                                                               "Threadpool")):
            times[e["name"]] += e.get("dur", 0.0)
            counts[e["name"]] += 1
    return {name: (micros, counts[name]) for name, micros in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/bench_cpu.py")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides KEY=VALUE")
    parser.add_argument("--top", type=int, default=15, help="how many of the slowest instructions to list")
    parser.add_argument("--part", default="", help="list only the instructions of this part (e.g. attention)")
    args = parser.parse_args()
    if any("=" not in s for s in args.set):
        parser.error("--set takes KEY=VALUE pairs")
    cfg = config_lib.load_config(args.config, dict(s.split("=", 1) for s in args.set))
    trainable = build_trainable(cfg)
    state = trainable.init_state()
    B, L = cfg.train.batch_size, cfg.model.seq_len
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (B, L + 1), dtype=np.int32)
    with trainable.activate():
        batch = trainable.to_device({"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                                     "segment_ids": np.ones((B, L), np.int32)})
        instructions = hlo_instructions(trainable.train_step.lower(state, batch).compile().as_text())
        for _ in range(3):
            state, metrics = trainable.train_step(state, batch)
        jax.block_until_ready(metrics)
        ceiling = max(measure_matmul_flops(2048, np.float32) for _ in range(3))
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = trainable.train_step(state, batch)
        jax.block_until_ready(metrics)
        step_s = (time.perf_counter() - start) / args.steps
        with tempfile.TemporaryDirectory() as directory:
            with jax.profiler.trace(directory, create_perfetto_trace=True):
                for _ in range(args.steps):
                    state, metrics = trainable.train_step(state, batch)
                jax.block_until_ready(metrics)
            times = traced_times(directory)
    useful = flops_per_token(cfg.model) * B * L
    groups = collections.defaultdict(lambda: [0.0, 0, 0.0])  # seconds per step, dot flops, dot seconds
    opcodes = collections.defaultdict(float)
    unknown = 0.0
    for name, (micros, runs) in times.items():
        seconds = micros / 1e6 / args.steps
        info = instructions.get(name)
        if info is None:
            unknown += seconds
            continue
        backward = "transpose(" in info["source"]
        key = (part_of(info["source"]), "backward" if backward else "forward")
        groups[key][0] += seconds
        opcodes[info["opcode"]] += seconds
        if info["flops"]:
            groups[key][1] += info["flops"] * runs / args.steps
            groups[key][2] += seconds
    traced = sum(v[0] for v in groups.values()) + unknown
    print(f"config {cfg.name}: step {step_s * 1e3:.1f} ms untraced | {useful / step_s / 1e9:.1f} GFLOP/s useful | "
          f"ceiling {ceiling / 1e9:.1f} GFLOP/s (float32 2048^2) | ratio {useful / step_s / ceiling:.3f} | "
          f"host malloc {allocator.state()}")
    print(f"traced instructions: {traced * 1e3:.1f} ms per step ({len(times)} names; {unknown * 1e3:.1f} ms "
          f"not in the HLO)\n")
    print(f"{'part':<12} {'pass':<9} {'ms/step':>8} {'share':>6} {'dot GFLOP':>10} {'dot GFLOP/s':>12} "
          f"{'of ceiling':>10}")
    for (part, direction), (seconds, flops, dot_seconds) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        rate = flops / dot_seconds / 1e9 if dot_seconds else 0.0
        print(f"{part:<12} {direction:<9} {seconds * 1e3:>8.1f} {seconds / traced:>6.1%} {flops / 1e9:>10.2f} "
              f"{rate:>12.1f} {rate * 1e9 / ceiling if rate else 0:>10.2f}")
    print("\nby opcode: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in sorted(opcodes.items(), key=lambda kv: -kv[1])
                                      if v * 1e3 >= 0.5))
    picked = [(m / 1e3 / args.steps, n) for n, (m, _) in times.items()
              if not args.part or part_of(instructions.get(n, {}).get("source", "")) == args.part]
    print("\nslowest instructions (ms/step, name, opcode, GFLOP/s of its dots, source):")
    for ms, name in sorted(picked, reverse=True)[:args.top]:
        info = instructions.get(name, {})
        runs = times[name][1] / args.steps
        rate = f"{info['flops'] * runs / ms / 1e6:7.1f}" if info.get("flops") else " " * 7
        print(f"  {ms:7.2f}  {name:<28} {info.get('opcode', '?'):<10} {rate} {info.get('source', '')[-80:]}")


if __name__ == "__main__":
    main()
