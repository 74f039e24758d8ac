"""dpo_tiny: direct preference optimisation of the fine-tuned tiny model on rule-labelled pairs.

Purpose: the guide's DPO on a 2-core CPU: the policy starts from sft_tiny's result, which is also the reference
         (its log-probabilities of every pair are computed once before training); beta 0.1, the sigmoid loss
         (`--config.train.dpo_loss=ipo|hinge`, `--config.train.dpo_label_smoothing=0.1` for the variants).
Run:     llm-jax data make-sft --output runs/sft_data
         llm-jax train --config configs/sft_tiny.py --workdir runs/sft_tiny
         llm-jax train --config configs/dpo_tiny.py --workdir runs/dpo_tiny
         llm-jax eval instruct --workdir runs/dpo_tiny --data runs/sft_data/test.jsonl
Reaches: experiments/align/results/README.md (preference accuracy and margin curves, exact match before/after).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "dpo_tiny"
    c.data.preferences = "runs/sft_data/prefs_train.jsonl"
    c.checkpoint.update(restore_from="runs/sft_tiny", restore_mode="params", every=0)
    c.train.update(objective="dpo", dpo_beta=0.1, dpo_loss="sigmoid", steps=200, batch_size=16, lr=1e-4,
                   lr_min=1e-5, warmup_steps=20, weight_decay=0.0, eval_every=25, eval_batches=4, log_every=25)
    return c
