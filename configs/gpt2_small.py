"""gpt2_small: GPT-2 124M (12 layers, d=768, 12 heads, 1024 learned positions, tied embeddings).

Purpose: the classic reproduction target, and the shape of the Hugging Face `gpt2` checkpoint
(`llm-jax convert from-hf` yields exactly this model). `llm-jax estimate --config configs/gpt2_small.py`
gives 124,439,808 parameters (checked by tests/test_configs.py).
Run:     llm-jax train --config configs/gpt2_small.py --workdir runs/gpt2 \
             --config.data.corpus=/path/to/text --config.data.tokenizer=/path/to/gpt2/tokenizer.json
Reaches: not run on this project's CPU machines (0.86 GFLOP per token: months on 2 cores). On an
         accelerator, size the job first with `llm-jax estimate`.
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "gpt2_small"
    c.model.update(vocab_size=50257, seq_len=1024, d_model=768, n_layers=12, n_heads=12, ffn="gelu_tanh",
                   positions="learned", norm="layernorm", tie_embeddings=True, use_bias=True, dropout=0.0)
    c.train.update(steps=600_000, batch_size=512, lr=6e-4, lr_min=6e-5, warmup_steps=2000, weight_decay=0.1,
                   b2=0.95, eval_every=2000, log_every=50)
    c.mesh.update(data=-1, fsdp=1, tensor=1)
    c.checkpoint.every = 2000
    return c
