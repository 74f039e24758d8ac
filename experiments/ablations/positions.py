"""Ablation: Learned vs sinusoidal vs RoPE vs no position information (causal attention alone can infer order).

Run:    llm-jax sweep run experiments/ablations/positions.py
Report: llm-jax sweep report experiments/ablations/positions.py   # -> experiments/ablations/results/positions/
"""

from llm_jax.sweep import Sweep


def get_sweep():
    return Sweep(
        name="positions",
        description=("Learned vs sinusoidal vs RoPE vs no position information (causal attention alone can infer "
                     "order)."),
        base="configs/ablation.py",
        variants={"learned": {"model.positions": "learned"}, "sinusoidal": {"model.positions": "sinusoidal"},
                "rope": {"model.positions": "rope"}, "none": {"model.positions": "none"}},
        overrides={},
        seeds=[0, 1],
    )
