"""MoE vs dense at equal active parameters and equal tokens, and top-1 vs top-2 routing.

The dense base (configs/ablation.py: d 96, GELU FFN of width 384) against 8-expert MoE feed-forward layers whose
active width per token is also 384: top-2 of experts 192 wide (weights renormalised over the two, as Mixtral), or
top-1 of experts 384 wide (gate = the router probability, as Switch: renormalised, a single gate would be 1 and the
router would learn nothing from the loss). Dropless routing, default balancing (0.01) and z-loss (0.001) weights;
2 seeds; same 819,200 training tokens.

Run:    llm-jax sweep run experiments/moe/moe_vs_dense.py
Report: llm-jax sweep report experiments/moe/moe_vs_dense.py   # -> experiments/moe/results/moe_vs_dense/
"""

from llm_jax.sweep import Sweep

MOE = {"model.moe_experts": 8}


def get_sweep():
    return Sweep(
        name="moe_vs_dense",
        description=("Dense GELU FFN (width 384) vs 8-expert MoE at the same active FFN width per token: top-2 of "
                     "192-wide experts (renormalised weights), top-1 of 384-wide experts (Switch gate: the router "
                     "probability). Dropless; equal tokens; 2 seeds."),
        base="configs/ablation.py",
        variants={"dense": {},
                  "moe_top2": {**MOE, "model.moe_top_k": 2, "model.moe_d_ff": 192},
                  "moe_top1": {**MOE, "model.moe_top_k": 1, "model.moe_d_ff": 384, "model.moe_norm_topk": False}},
        overrides={},
        seeds=[0, 1],
    )
