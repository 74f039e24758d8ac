"""llama_7b: a 7B Llama-style model with grouped-query attention (32 layers, d=4096, 32 heads, 8 KV heads,
SwiGLU 14336, RoPE, RMSNorm, untied head, vocabulary 32000 — the Mistral-7B shape).

Purpose: a pod-scale pretraining config: FSDP across hosts, tensor parallelism inside a host
(override `--config.mesh.tensor=8` on 8-GPU nodes), full remat.
Run:     llm-jax train --config configs/llama_7b.py --workdir gs://bucket/runs/llama_7b \
             --config.data.corpus=/path/to/text --config.data.tokenizer=/path/to/tokenizer.model
Reaches: not run on this project's machines; `llm-jax estimate --config configs/llama_7b.py` prints its
         parameters (7,241,732,096) and FLOPs per token.
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "llama_7b"
    c.model.update(vocab_size=32000, seq_len=4096, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                   d_ff=14336, positions="rope", rope_theta=10000.0, norm="rmsnorm", norm_eps=1e-5, ffn="swiglu",
                   tie_embeddings=False, use_bias=False, dtype="bfloat16", param_dtype="float32", remat="full")
    c.train.update(steps=250_000, batch_size=1024, lr=3e-4, lr_min=3e-5, warmup_steps=2000, weight_decay=0.1,
                   b2=0.95, eval_every=1000, log_every=10)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.checkpoint.every = 1000
    return c
