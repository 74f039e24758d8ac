"""Ablation: LayerNorm vs RMSNorm (the guide's Layer Normalization section), pre-LN, everything else as
configs/ablation.py.

Run:    llm-jax sweep run experiments/ablations/norm.py
Report: llm-jax sweep report experiments/ablations/norm.py   # -> experiments/ablations/results/norm/
"""

from llm_jax.sweep import Sweep


def get_sweep():
    return Sweep(
        name="norm",
        description=("LayerNorm vs RMSNorm (the guide's Layer Normalization section), pre-LN, everything else as "
                     "configs/ablation.py."),
        base="configs/ablation.py",
        variants={"layernorm": {"model.norm": "layernorm"}, "rmsnorm": {"model.norm": "rmsnorm"}},
        overrides={},
        seeds=[0, 1],
    )
