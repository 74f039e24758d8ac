"""llama_70b: a 70B Llama-style model (Llama-2-70B shape: 80 layers, d=8192, 64 heads, 8 KV heads, SwiGLU
28672, RoPE, RMSNorm, untied head, vocabulary 32000).

Purpose: the pod-scale end of the config family, for sizing jobs (`llm-jax estimate`) and for 3D layouts:
FSDP with tensor parallelism inside a host, full remat, and pipeline stages where memory needs them.
Run:     llm-jax train --config configs/llama_70b.py --workdir gs://bucket/runs/llama_70b \
             --config.mesh.fsdp=-1 --config.mesh.tensor=4 (see docs/parallelism.md for layouts)
Reaches: not run on this project's machines; `llm-jax estimate --config configs/llama_70b.py --topology
         v5p-512` prints its parameters (68,976,648,192), per-chip memory and step time.
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "llama_70b"
    c.model.update(vocab_size=32000, seq_len=4096, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                   d_ff=28672, positions="rope", rope_theta=10000.0, norm="rmsnorm", norm_eps=1e-5, ffn="swiglu",
                   tie_embeddings=False, use_bias=False, dtype="bfloat16", param_dtype="float32", remat="full")
    c.train.update(steps=250_000, batch_size=1024, lr=1.5e-4, lr_min=1.5e-5, warmup_steps=2000, weight_decay=0.1,
                   b2=0.95, eval_every=1000, log_every=10)
    c.mesh.update(data=1, fsdp=-1, tensor=4)
    c.checkpoint.every = 500
    return c
