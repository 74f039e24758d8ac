"""t5_tiny: the CPU encoder-decoder — T5 v1.1 style (gated-GELU, RMSNorm, relative position bias, no biases),
2 + 2 layers, d=128, trained with span corruption on the embedded Shakespeare corpus.

Purpose: try the encoder-decoder family and the span-corruption objective on a laptop; the encoder-decoder side
of experiments/objectives.
Run:     llm-jax train --config configs/t5_tiny.py --workdir runs/t5_tiny
Reaches: see docs/families.md (held-out span-corruption loss and wall time on a 2-core CPU).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "t5_tiny"
    c.model.update(family="encdec", d_model=128, n_layers=2, n_heads=4, positions="relative", norm="rmsnorm",
                   ffn="geglu", d_ff=512, tie_embeddings=False, use_bias=False, seq_len=128)
    c.train.update(objective="span_corruption", steps=600, batch_size=16, lr=3e-3, warmup_steps=50)
    return c
