"""`llm-jax bench train`: training throughput against a matmul ceiling measured in the same process.

The ratio achieved/ceiling compares the model's useful FLOP/s (the config's FLOPs per token times tokens per
second) with the best FLOP/s a single large matmul reaches on the same hardware, moments apart. On CPU the
ceiling is a float32 2048^2 matmul; on accelerators a bfloat16 8192^2 matmul (float32 accumulation), and
MFU against the published peak is reported too where the chip is in the table.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax import allocator
from llm_jax.hardware import measure_matmul_flops, table_peak
from llm_jax.models.accounting import flops_per_token, param_count
from llm_jax.train.trainable import build_trainable


def ceiling(platform: str) -> tuple[float, str]:
    if platform == "cpu":
        return measure_matmul_flops(2048, jnp.float32), "float32 2048x2048 matmul"
    return (measure_matmul_flops(8192, jnp.bfloat16, preferred=jnp.float32),
            "bfloat16 8192x8192 matmul (float32 accumulation)")


CEILING_ROUNDS = 3  # ceiling measurements (each best of 10 warmed-up runs) before and again after the timed steps


def ceilings(platform: str) -> tuple[list[float], str]:
    samples, how = [], ""
    for _ in range(CEILING_ROUNDS):
        flops, how = ceiling(platform)
        samples.append(flops)
    return samples, how


def bench_train(cfg, steps: int = 20, warmup: int = 3, log=print) -> dict:
    trainable = build_trainable(cfg)
    state = trainable.init_state()
    B, L = cfg.train.batch_size, cfg.model.seq_len
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (B, L + 1), dtype=np.int32)
    host_batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((B, L), np.int32)}
    platform = jax.devices()[0].platform
    log(f"bench: {cfg.name} | {param_count(cfg.model):,} parameters | batch {B} x {L} | {cfg.model.dtype} | "
        f"{jax.device_count()} {platform} device(s) | host malloc {allocator.state()}")
    with trainable.activate():
        step_fn = trainable.train_step
        batch = trainable.to_device(host_batch)
        start = time.perf_counter()
        for _ in range(warmup):
            state, metrics = step_fn(state, batch)
        jax.block_until_ready(metrics)
        log(f"bench: compiled and warmed up in {time.perf_counter() - start:.1f}s; timing {steps} steps")
        before, how = ceilings(platform)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = step_fn(state, batch)
        jax.block_until_ready(metrics)
        elapsed = time.perf_counter() - start
    after, _ = ceilings(platform)
    samples = before + after
    best_ceiling = max(samples)  # the stricter reference: a busy moment can only lower a measurement
    spread = 1 - min(samples) / best_ceiling
    fpt = flops_per_token(cfg.model)
    tokens_per_sec = steps * B * L / elapsed
    achieved = tokens_per_sec * fpt
    result = {
        "config": cfg.name, "params": param_count(cfg.model), "flops_per_token": fpt, "devices": jax.device_count(),
        "platform": platform, "device_kind": jax.devices()[0].device_kind, "step_time_s": elapsed / steps,
        "tokens_per_sec": tokens_per_sec, "achieved_flops_per_sec": achieved,
        "ceiling_flops_per_sec": best_ceiling, "ceiling": how, "ratio": achieved / best_ceiling,
        "ceiling_samples": samples, "ceiling_spread": spread,
        "loss": float(metrics["loss"]), "host_malloc": allocator.state(),
    }
    peak = table_peak(result["device_kind"]) if platform != "cpu" else None
    if peak:
        result["peak_flops_per_sec"] = peak * jax.device_count()
        result["mfu"] = achieved / result["peak_flops_per_sec"]
    log(f"bench: {tokens_per_sec:,.0f} tokens/s | {achieved / 1e9:,.1f} GFLOP/s achieved | ceiling "
        f"{best_ceiling / 1e9:,.1f} GFLOP/s ({how}; best of {len(samples)} measurements, the lowest "
        f"{100 * spread:.1f}% below it) | ratio {result['ratio']:.3f}")
    if spread > 0.1:
        log("bench: warning: the ceiling measurements differ by more than 10%; the machine was busy — rerun on "
            "an idle machine for a ratio you can compare")
    return result
