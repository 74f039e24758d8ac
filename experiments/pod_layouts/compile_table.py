"""docs/parallelism.md's table of recommended pod layouts: the analytic estimate (`llm-jax estimate`) beside what
the real TPU compiler says (`llm-jax compile`, libtpu on this CPU machine), per chip.

Run:  JAX_PLATFORMS=cpu python experiments/pod_layouts/compile_table.py   (about 5 min on 2 cores)
"""

from __future__ import annotations

import time

from llm_jax.config import load_config
from llm_jax.scaling.aot import RECOMMENDED_LAYOUTS, compile_for
from llm_jax.scaling.memory import estimate, parse_topology


def row(name: str, config: str, topology: str, slices: int, overrides: list[str]) -> str:
    settings = dict(o.split("=", 1) for o in overrides)
    target = parse_topology(topology)
    chips = target["chips"] * slices
    cfg = load_config(f"configs/{config}.py", settings, n_devices=chips)
    est = estimate(cfg, chips, target["peak_flops"], target["hbm_bytes"], 0.4)
    started = time.perf_counter()
    _, _, out = compile_for(f"configs/{config}.py", settings, topology, slices, False)
    seconds = time.perf_counter() - started
    gib = lambda b: f"{b / 2**30:.1f}"  # noqa: E731
    mesh = ", ".join(f"{k}={v}" for k, v in out["mesh"].items() if v > 1)
    per_step = lambda op: out["collectives"][op]["per_step_count"] if "collectives" in out else "—"  # noqa: E731
    return (f"| {name} | {' '.join(f'`{o}`' for o in overrides)} | {mesh} | {gib(est['per_device_bytes']['total'])} "
            f"| {gib(out['bytes_per_chip'])} ({gib(out.get('temp_bytes', 0))} temp) | {gib(out['hbm_bytes'])} "
            f"| {'yes' if out['fits'] else 'no'} | {per_step('all-gather')} / {per_step('all-reduce')} / "
            f"{per_step('collective-permute')} | {seconds:.0f} |")


def main() -> None:
    print("| layout | overrides | mesh | estimate (GiB) | compiled (GiB) | HBM | fits | all-gather / all-reduce / "
          "collective-permute per step | compile (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (config, topology, slices, overrides) in RECOMMENDED_LAYOUTS.items():
        print(row(name, config, topology, slices, overrides), flush=True)


if __name__ == "__main__":
    main()
