"""Ablation: ReLU vs GELU vs SwiGLU at matched parameters: d_ff = 4d = 384 for the two-matrix FFNs,
256 for SwiGLU's three (3 x 96 x 256 = 2 x 96 x 384).

Run:    llm-jax sweep run experiments/ablations/ffn.py
Report: llm-jax sweep report experiments/ablations/ffn.py   # -> experiments/ablations/results/ffn/
"""

from llm_jax.sweep import Sweep


def get_sweep():
    return Sweep(
        name="ffn",
        description=("ReLU vs GELU vs SwiGLU at matched parameters: d_ff = 4d = 384 for the two-matrix FFNs, "
                     "256 for SwiGLU's three (3 x 96 x 256 = 2 x 96 x 384)."),
        base="configs/ablation.py",
        variants={"relu": {"model.ffn": "relu", "model.d_ff": 384}, "gelu": {"model.ffn": "gelu", "model.d_ff": 384},
                  "swiglu": {"model.ffn": "swiglu", "model.d_ff": 256}},
        overrides={},
        seeds=[0, 1],
    )
