"""Ablation: Pre-LN vs post-LN (the original Transformer's placement), same learning rate and warmup.

Run:    llm-jax sweep run experiments/ablations/norm_position.py --parallel 2
Report: llm-jax sweep report experiments/ablations/norm_position.py   # -> experiments/ablations/results/norm_position/
"""

from llm_jax.sweep import Sweep


def get_sweep():
    return Sweep(
        name="norm_position",
        description="Pre-LN vs post-LN (the original Transformer's placement), same learning rate and warmup.",
        base="configs/ablation.py",
        variants={"pre-LN": {"model.norm_position": "pre"}, "post-LN": {"model.norm_position": "post"}},
        overrides={},
        seeds=[0, 1],
    )
