"""llama_1b: a 1.1B Llama-style model (TinyLlama shape: 22 layers, d=2048, 32 heads, 4 KV heads, SwiGLU
5632, RoPE, RMSNorm, untied head, vocabulary 32000).

Purpose: the smallest "modern architecture" pretraining config for a TPU slice or a GPU node; FSDP over
all devices by default (parameters and optimizer state sharded, ZeRO-3 style).
Run:     llm-jax train --config configs/llama_1b.py --workdir runs/llama_1b \
             --config.data.corpus=/path/to/text --config.data.tokenizer=/path/to/tokenizer.model
Reaches: not run on this project's machines; `llm-jax estimate --config configs/llama_1b.py` prints its
         parameters (1,100,048,384) and FLOPs per token.
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "llama_1b"
    c.model.update(vocab_size=32000, seq_len=2048, d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4,
                   d_ff=5632, positions="rope", rope_theta=10000.0, norm="rmsnorm", norm_eps=1e-5, ffn="swiglu",
                   tie_embeddings=False, use_bias=False, dtype="bfloat16", param_dtype="float32", remat="dots")
    c.train.update(steps=100_000, batch_size=512, lr=4e-4, lr_min=4e-5, warmup_steps=2000, weight_decay=0.1,
                   b2=0.95, eval_every=1000, log_every=10)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.checkpoint.every = 1000
    return c
