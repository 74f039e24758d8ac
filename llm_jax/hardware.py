"""Model FLOPs utilisation: achieved FLOP/s over the hardware's peak.

Accelerators use their published dense bfloat16 peak per chip; a CPU has no meaningful published figure, so
its "peak" is a matmul ceiling measured on the spot (a jitted square matmul, best of several runs).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

# Dense bfloat16 FLOP/s per chip (vendor figures; GPUs without sparsity).
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,   # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,   # v6e (Trillium)
    "TPU v6e": 918e12,
    "A100": 312e12,
    "H100": 989e12,
    "H200": 989e12,
}


# HBM bandwidth per chip, bytes/s (vendor figures): what bounds decoding, which reads every weight per step.
HBM_BANDWIDTH = {
    "TPU v4": 1.2e12,
    "TPU v5 lite": 819e9,
    "TPU v5e": 819e9,
    "TPU v5p": 2.765e12,
    "TPU v5": 2.765e12,
    "TPU v6 lite": 1.64e12,
    "TPU v6e": 1.64e12,
    "A100": 2.039e12,   # 80 GB SXM
    "H100": 3.35e12,    # SXM
    "H200": 4.8e12,
}


def table_bandwidth(device_kind: str) -> float | None:
    """HBM bytes/s for a device kind string, like `table_peak`."""
    for name in sorted(HBM_BANDWIDTH, key=len, reverse=True):
        if name.lower() in device_kind.lower():
            return HBM_BANDWIDTH[name]
    return None


def table_peak(device_kind: str) -> float | None:
    """Peak FLOP/s for a device kind string such as 'NVIDIA H100 80GB HBM3' or 'TPU v5 lite'."""
    for name in sorted(PEAK_FLOPS, key=len, reverse=True):  # most specific name first
        if name.lower() in device_kind.lower():
            return PEAK_FLOPS[name]
    return None


def measure_matmul_flops(n: int = 2048, dtype=jnp.float32, repeats: int = 10, device=None,
                         preferred=None) -> float:
    """FLOP/s of a jitted n x n matmul on one device (best of `repeats`)."""
    device = device or jax.local_devices()[0]
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(key_a, (n, n), jnp.float32).astype(dtype), device)
    b = jax.device_put(jax.random.normal(key_b, (n, n), jnp.float32).astype(dtype), device)
    matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=preferred))
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


_CPU_CEILING: dict[int, float] = {}


def peak_flops(devices=None) -> tuple[float, str]:
    """(total peak FLOP/s over `devices`, how it was obtained).

    CPU devices — including fake ones made with --xla_force_host_platform_device_count — share the same
    cores, so the measured single-matmul ceiling is the whole machine's peak, not a per-device one.
    """
    devices = list(devices or jax.devices())
    kind = devices[0].device_kind
    if devices[0].platform == "cpu":
        if not _CPU_CEILING:
            _CPU_CEILING[0] = measure_matmul_flops()
        return _CPU_CEILING[0], "measured float32 2048x2048 matmul ceiling (CPU)"
    per_chip = table_peak(kind)
    if per_chip is None:
        per_chip = measure_matmul_flops(8192, jnp.bfloat16, device=devices[0])
        return per_chip * len(devices), f"measured bfloat16 8192x8192 matmul ceiling ({kind})"
    return per_chip * len(devices), f"published bfloat16 peak of {kind} x {len(devices)}"
