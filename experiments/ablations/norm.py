"""Ablation: LayerNorm vs RMSNorm (the guide's Layer Normalization section), pre-LN, everything else as
configs/ablation.py. Beside the loss, two downstream tasks (train.eval_tasks, docs/evaluation.md) are scored at every
evaluation: the generated Shakespeare multiple-choice tasks next_line and speaker, 200 items each (chance 25 %).

Run:    llm-jax sweep run experiments/ablations/norm.py
Report: llm-jax sweep report experiments/ablations/norm.py   # -> experiments/ablations/results/norm/
"""

from llm_jax.sweep import Sweep

# Every item of both generated tasks (limit 0 = all), scored at steps 0, 100, ..., 400.
DOWNSTREAM = [{"kind": "choice", "path": "shakespeare:next_line", "limit": 0},
              {"kind": "choice", "path": "shakespeare:speaker", "limit": 0}]


def get_sweep():
    return Sweep(
        name="norm",
        description=("LayerNorm vs RMSNorm (the guide's Layer Normalization section), pre-LN, everything else as "
                     "configs/ablation.py. Downstream: the generated Shakespeare tasks (`shakespeare:next_line`, "
                     "`shakespeare:speaker`: 4-way multiple choice on held-out scenes, 200 items each, chance 0.25), "
                     "scored with train.eval_tasks at every evaluation."),
        base="configs/ablation.py",
        variants={"layernorm": {"model.norm": "layernorm"}, "rmsnorm": {"model.norm": "rmsnorm"}},
        overrides={"train.eval_tasks": DOWNSTREAM},
        seeds=[0, 1],
    )
