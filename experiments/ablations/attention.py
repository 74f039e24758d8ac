"""Ablation: MHA vs GQA vs MQA with 6 heads of 16: 6, 2 and 1 key/value heads.

Run:    llm-jax sweep run experiments/ablations/attention.py
Report: llm-jax sweep report experiments/ablations/attention.py   # -> experiments/ablations/results/attention/
"""

from llm_jax.sweep import Sweep


def get_sweep():
    return Sweep(
        name="attention",
        description='MHA vs GQA vs MQA with 6 heads of 16: 6, 2 and 1 key/value heads.',
        base="configs/ablation.py",
        variants={"MHA": {"model.n_kv_heads": 6}, "GQA-2": {"model.n_kv_heads": 2}, "MQA": {"model.n_kv_heads": 1}},
        overrides={"model.n_heads": 6},
        seeds=[0, 1],
    )
