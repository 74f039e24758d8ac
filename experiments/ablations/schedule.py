"""Ablation: Cosine vs warmup-stable-decay (last 20% linear) vs inverse square root, same peak learning rate and warmup.

Run:    llm-jax sweep run experiments/ablations/schedule.py
Report: llm-jax sweep report experiments/ablations/schedule.py   # -> experiments/ablations/results/schedule/
"""

from llm_jax.sweep import Sweep


def get_sweep():
    return Sweep(
        name="schedule",
        description=("Cosine vs warmup-stable-decay (last 20% linear) vs inverse square root, same peak learning rate "
                     "and warmup."),
        base="configs/ablation.py",
        variants={"cosine": {"train.schedule": "cosine"}, "wsd": {"train.schedule": "wsd"},
                "inverse_sqrt": {"train.schedule": "inverse_sqrt"}},
        overrides={},
        seeds=[0, 1],
    )
