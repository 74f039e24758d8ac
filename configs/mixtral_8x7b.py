"""mixtral_8x7b: the Mixtral 8x7B shape — a Llama-style decoder (32 layers, d=4096, 32 heads, 8 KV heads, RoPE
theta 1e6, RMSNorm, untied head, vocabulary 32000) whose every feed-forward layer is 8 SwiGLU experts of width
14336, 2 chosen per token by a softmax router.

Purpose: the MoE pretraining config for a TPU pod: experts sharded over `mesh.expert` (expert parallelism,
tokens exchanged by all-to-all on the capacity path), parameters over `mesh.fsdp`.
Run:     llm-jax train --config configs/mixtral_8x7b.py --workdir runs/mixtral \
             --config.data.corpus=/path/to/text --config.data.tokenizer=/path/to/tokenizer.model
Reaches: not run on this project's machines; `llm-jax estimate --config configs/mixtral_8x7b.py --devices 256
         --json` reports params 46,702,792,704 and active_params 12,879,925,248 (Mistral's 46.7B / 12.9B);
         tests/models/test_moe.py checks both against the initialised tree's shapes (nothing allocated).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "mixtral_8x7b"
    c.model.update(vocab_size=32000, seq_len=4096, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                   d_ff=14336, positions="rope", rope_theta=1e6, norm="rmsnorm", norm_eps=1e-5, ffn="swiglu",
                   tie_embeddings=False, use_bias=False, dtype="bfloat16", param_dtype="float32", remat="full",
                   moe_experts=8, moe_top_k=2, moe_capacity_factor=1.25,
                   moe_balance_weight=0.00125)  # = Mixtral's router_aux_loss_coef 0.02 (x top_k / layers, per layer)
    c.train.update(steps=100_000, batch_size=1024, lr=3e-4, lr_min=3e-5, warmup_steps=2000, weight_decay=0.1,
                   b2=0.95, eval_every=1000, log_every=10)
    c.mesh.update(data=1, fsdp=-1, expert=8, tensor=1)
    c.checkpoint.every = 1000
    return c
