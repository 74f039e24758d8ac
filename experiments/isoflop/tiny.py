"""IsoFLOP study at tiny scale: 3 compute budgets x 4-5 model sizes on the embedded Shakespeare corpus.

Each budget C (training FLOPs, as the accounting counts them: 6 x every multiplied weight + attention) gets
shapes bracketing its optimum; each run trains on tokens = C / (FLOPs per token) = C / (6N),
with N = FLOPs per token / 6 (the compute parameters: at this scale the 1,024 x d output layer is a large
share of them, so it is counted). Learning rate rule: 3e-3 x sqrt(96 / d_model) (smaller models take larger
steps); batch 16 x 128 tokens; cosine decay to lr/10. `llm-jax sweep report` fits approaches 1-3 to the result.

Run:    llm-jax sweep run experiments/isoflop/tiny.py
Report: llm-jax sweep report experiments/isoflop/tiny.py   # -> experiments/isoflop/results/tiny/
"""

from llm_jax.sweep import Sweep
from llm_jax.sweep.isoflop import isoflop_variants, shape

LADDER = [shape(8, 1, head_dim=8), shape(16, 1, head_dim=16), shape(24, 2, head_dim=24), shape(32, 2),
          shape(48, 2, head_dim=24), shape(64, 3), shape(96, 3)]
BUDGETS = [3e11, 1e12, 3e12]
# The first pass used sizes 16-48, 24-64 and 32-96: the smallest won at the two lower budgets, so their ladders
# were extended one size down until each budget's minimum was bracketed.
SHAPES = {3e11: LADDER[0:5], 1e12: LADDER[1:6], 3e12: LADDER[3:7]}


def get_sweep():
    variants, meta = isoflop_variants(
        "configs/ablation.py", BUDGETS, SHAPES,
        base_overrides={"model.scan_unroll": 1, "train.eval_every": 100, "checkpoint.every": 500},
        lr_rule=lambda m: round(3e-3 * (96 / m.d_model) ** 0.5, 6))
    for overrides in variants.values():
        overrides["train.lr_min"] = round(overrides["train.lr"] / 10, 7)
    return Sweep(name="tiny", base="configs/ablation.py", variants=variants, meta=meta, seeds=[0],
                 description="IsoFLOP profiles: budgets 3e11, 1e12, 3e12 FLOPs x 4-5 sizes each, one seed.")
