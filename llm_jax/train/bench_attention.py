"""`llm-jax bench attention`: forward+backward time and compiled temporary memory of every attention
implementation, per sequence length and mask, for one attention layer (d_model 256, 4 heads, batch 1).

Each row compiles the layer's gradient (with respect to its input and parameters) once, reads the compiled
temporary bytes from `memory_analysis()`, and times the best of `repeats` warmed-up runs. A row that cannot
run says why in `error` (and its figures are null): cuDNN off a GPU, or a compiled step whose temporary
memory exceeds half of this machine's free memory (not run rather than swapping or being killed).
"""

from __future__ import annotations

import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from llm_jax import config as config_lib
from llm_jax.models.attention import Attention
from llm_jax.models import ModelConfig, build_model

IMPLS = ("xla", "blockwise", "cudnn")
MASKS = ("causal", "document", "window_512")


def _free_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemAvailable"]
    except (OSError, KeyError, ValueError):
        return 2 ** 62


def _layer_config(impl: str, seq_len: int, mask: str, dtype: str) -> ModelConfig:
    cfg = config_lib.default_config()
    cfg.model.update(d_model=256, n_heads=4, n_layers=1, seq_len=seq_len, positions="rope", attention_impl=impl,
                     dtype=dtype, attention_window=512 if mask == "window_512" else 0,
                     document_mask=mask == "document")
    cfg = config_lib.resolve(cfg)
    config_lib.validate(cfg)
    return build_model(cfg.model).cfg  # the model's view of the config; the bench runs one attention layer


def _documents(seq_len: int) -> np.ndarray:
    """Packed documents of random lengths (mean 1/8 of the sequence), fixed seed."""
    cuts = np.sort(np.random.default_rng(0).choice(np.arange(1, seq_len), 7, replace=False))
    return np.searchsorted(cuts, np.arange(seq_len), side="right")[None].astype(np.int32)


def bench_row(impl: str, seq_len: int, mask: str, dtype: str = "float32", repeats: int = 3) -> dict:
    row = {"impl": impl, "seq_len": seq_len, "mask": mask, "seconds": None, "temp_bytes": None, "error": None}
    try:
        mcfg = _layer_config(impl, seq_len, mask, dtype)
        layer = Attention(mcfg, causal=True, window=mcfg.attention_window)
        x = jax.random.normal(jax.random.key(0), (1, seq_len, mcfg.d_model), mcfg.compute_dtype)
        positions = jnp.arange(seq_len)[None]
        segments = jnp.asarray(_documents(seq_len)) if mask == "document" else None
        params = nn.unbox(jax.jit(lambda x: layer.init(jax.random.key(1), x, positions, segments))(x)["params"])
        loss = lambda p, x: layer.apply({"params": p}, x, positions, segments).astype(jnp.float32).sum()  # noqa
        compiled = jax.jit(jax.grad(loss, (0, 1))).lower(params, x).compile()
        row["temp_bytes"] = int(compiled.memory_analysis().temp_size_in_bytes)
        if row["temp_bytes"] > _free_bytes() // 2:
            row["error"] = (f"not run: needs {row['temp_bytes'] / 2**30:.1f} GiB of temporaries, more than half of "
                            f"the {_free_bytes() / 2**30:.1f} GiB free")
            return row
        jax.block_until_ready(compiled(params, x))
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(params, x))
            best = min(best, time.perf_counter() - start)
        row["seconds"] = best
    except Exception as e:  # noqa: BLE001 — a row that cannot compile or run reports why and the table goes on
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return row


def bench_attention(seq_lens, impls=IMPLS, masks=MASKS, dtype: str = "float32", log=print) -> dict:
    rows = []
    log(f"bench attention: one layer d_model 256, 4 heads, batch 1, {dtype}, forward+backward on "
        f"{jax.devices()[0].platform} ({os.cpu_count()} cpus); best of 3")
    for seq_len in seq_lens:
        for mask in masks:
            for impl in impls:
                row = bench_row(impl, seq_len, mask, dtype)
                rows.append(row)
                figures = (f"{row['seconds']:8.3f} s  {row['temp_bytes'] / 2**20:10.1f} MiB temporary"
                           if row["seconds"] is not None else f"{'':8}    {row['error']}")
                log(f"  {impl:9} {seq_len:6} {mask:10} {figures}")
    return {"rows": rows}
