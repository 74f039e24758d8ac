"""bench_cpu: the CPU throughput benchmark — a ~10M-parameter GPT-2-style model, float32.

Purpose: measure how close training gets to the machine's own float32 matmul ceiling (d=384, 4 layers,
6 heads, vocab 8192, batch 8 x 256). Synthetic tokens; no data preparation. The 4 layers are unrolled in
one scan iteration (model.scan_unroll=4): on XLA:CPU that saves the per-layer copies of a rolled scan
(ratio 0.578 vs 0.537 rolled, measured in one session; compile time is no concern at 4 layers).
Run:     llm-jax bench train --config configs/bench_cpu.py --json
Reaches: ratio (achieved / ceiling FLOP/s) >= 0.6 on a 2-core CPU (0.601-0.692, 2026-12-03; README).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "bench_cpu"
    c.model.update(vocab_size=8192, seq_len=256, d_model=384, n_layers=4, n_heads=6, ffn="gelu_tanh", scan_unroll=4)
    c.train.update(batch_size=8, steps=100, warmup_steps=10)
    return c
