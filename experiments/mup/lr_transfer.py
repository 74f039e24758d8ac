"""muP learning-rate transfer: the best learning rate at widths 32, 64 and 128, under muP and under the
standard parametrization (SP), on the embedded Shakespeare corpus.

muP's promise (Yang et al., Tensor Programs V): tune at the small width, reuse at the large one. Under SP with
Adam the best learning rate shrinks as the model widens. Base width 32 (where muP equals SP but for 1/d
attention); 2 layers, heads of 16, 300 steps of 16 x 128 tokens, constant learning rate after 30 warmup steps.

Run:    llm-jax sweep run experiments/mup/lr_transfer.py
Report: llm-jax sweep report experiments/mup/lr_transfer.py   # -> experiments/mup/results/lr_transfer/
"""

from llm_jax.sweep import Sweep

WIDTHS = (32, 64, 128)


def get_sweep():
    variants = {}
    for mup in (True, False):
        for d in WIDTHS:
            variants[f"{'muP' if mup else 'SP'} d={d}"] = {"model.mup": mup, "model.d_model": d,
                                                            "model.n_heads": d // 16}
    return Sweep(
        name="lr_transfer", base="configs/ablation.py", variants=variants,
        grid={"train.lr": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]},
        overrides={"model.mup_base_width": 32, "model.n_layers": 2, "model.scan_unroll": 2, "train.steps": 300,
                   "train.schedule": "constant", "train.warmup_steps": 30, "train.eval_every": 100,
                   "checkpoint.every": 300},
        seeds=[0],
        description="Final eval loss against the learning rate, per width, muP vs SP (one seed).")
