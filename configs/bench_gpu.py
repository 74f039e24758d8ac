"""bench_gpu: the accelerator throughput benchmark — the llama_1b shape in bfloat16, sequence 2048.

Purpose: MFU of the training step against a bfloat16 matmul ceiling measured in the same process (and
against the chip's published peak). Synthetic tokens; cuDNN flash attention on GPUs (model.attention_impl=auto).
Run:     llm-jax bench train --config configs/bench_gpu.py --json
Reaches: target >= 0.55 of the measured ceiling on one H100/H200-class GPU; not yet measured (this
         project's sessions have had no GPU) — run the command and record the figure in the README.
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "bench_gpu"
    c.model.update(vocab_size=32000, seq_len=2048, d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4,
                   d_ff=5632, positions="rope", norm="rmsnorm", ffn="swiglu", tie_embeddings=False,
                   use_bias=False, dtype="bfloat16", param_dtype="float32", remat="none")
    c.train.update(batch_size=8, steps=100, warmup_steps=10)
    c.mesh.update(data=-1, fsdp=1, tensor=1)
    return c
