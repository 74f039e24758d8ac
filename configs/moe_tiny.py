"""moe_tiny: the CPU MoE run — the `tiny` model with every feed-forward layer replaced by 8 experts of half its
width (512), 2 chosen per token: the same active parameters per token as `tiny` (but for biases and the router),
2.7x the total.

Purpose: try the mixture-of-experts path (router, balancing and z losses, dropless grouped matmul, routing
statistics in the metrics) on a laptop; the MoE side of experiments/moe_vs_dense.
Run:     llm-jax train --config configs/moe_tiny.py --workdir runs/moe_tiny
Reaches: see experiments/moe_vs_dense/README.md (eval loss next to the dense `tiny` at equal active
         parameters and tokens, and the per-expert load over training).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "moe_tiny"
    c.model.update(ffn="gelu", d_ff=1024, moe_experts=8, moe_top_k=2, moe_d_ff=512)
    return c
