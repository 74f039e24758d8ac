"""Ablation: Pre-LN vs post-LN (the original Transformer's placement), at the base learning rate 3e-3 and at 1e-3.

Post-LN is known to need a smaller learning rate or a longer warmup (Xiong et al. 2020); both placements are
run at both rates so each is compared at a rate it tolerates.

Run:    llm-jax sweep run experiments/ablations/norm_position.py
Report: llm-jax sweep report experiments/ablations/norm_position.py   # -> experiments/ablations/results/norm_position/
"""

from llm_jax.sweep import Sweep


def get_sweep():
    return Sweep(
        name="norm_position",
        description="Pre-LN vs post-LN (the original Transformer's placement), at learning rates 3e-3 and 1e-3.",
        base="configs/ablation.py",
        variants={"pre-LN": {"model.norm_position": "pre"}, "post-LN": {"model.norm_position": "post"},
                  "pre-LN_lr1e-3": {"model.norm_position": "pre", "train.lr": 1e-3, "train.lr_min": 1e-4},
                  "post-LN_lr1e-3": {"model.norm_position": "post", "train.lr": 1e-3, "train.lr_min": 1e-4}},
        overrides={},
        seeds=[0, 1],
    )
