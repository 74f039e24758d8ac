"""reward_tiny: a reward model on the fine-tuned tiny model: a scalar head trained with the Bradley-Terry loss.

Purpose: the guide's RLHF stage 1 on a 2-core CPU. The trunk is sft_tiny's result; the pairs are `make-sft`'s
         rule-labelled preferences (the right sum / count / reversal chosen over a wrong one), so what the reward
         model learns is checkable: held-out pairwise accuracy on prompts it never saw.
Run:     llm-jax data make-sft --output runs/sft_data
         llm-jax train --config configs/sft_tiny.py --workdir runs/sft_tiny
         llm-jax train --config configs/reward_tiny.py --workdir runs/reward_tiny
Reaches: experiments/align/results/README.md (python experiments/align/run.py).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "reward_tiny"
    c.model.value_head = True                 # the scalar head (new: initialised; the trunk from restore_from)
    c.data.preferences = "runs/sft_data/prefs_train.jsonl"
    c.checkpoint.update(restore_from="runs/sft_tiny", restore_mode="params", every=0)
    c.train.update(objective="reward", steps=300, batch_size=16, lr=3e-4, lr_min=3e-5, warmup_steps=20,
                   weight_decay=0.0, eval_every=50, eval_batches=4, log_every=25)
    return c
