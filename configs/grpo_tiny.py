"""grpo_tiny: group-relative policy optimisation of the fine-tuned tiny model with a rule reward.

Purpose: the guide's RL stage on a 2-core CPU without a value model (GRPO): the policy starts from sft_tiny's
         result, which is also the KL reference; each step samples 8 replies to each of 4 training prompts
         (temperature 1), scores them 1 if the reply equals the record's answer (else 0), and pushes up the
         replies that beat their group's mean (clip 0.2, KL weight 0.04). `train.rl_reward=overlap` gives partial
         credit instead.
Run:     llm-jax data make-sft --output runs/sft_data
         llm-jax train --config configs/sft_tiny.py --workdir runs/sft_tiny
         llm-jax train --config configs/grpo_tiny.py --workdir runs/grpo_tiny
         llm-jax eval instruct --workdir runs/grpo_tiny --data runs/sft_data/test.jsonl
Reaches: experiments/align/results/README.md (held-out reward and KL curves, exact match before/after).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "grpo_tiny"
    c.data.update(sft="runs/sft_data/train.jsonl", loss_mask="completion", pack=False)
    c.checkpoint.update(restore_from="runs/sft_tiny", restore_mode="params", every=0)
    c.train.update(objective="grpo", rl_group=8, rl_reward="exact", rl_temperature=1.0, rl_max_new_tokens=16,
                   rl_clip=0.2, rl_kl=0.04, steps=100, batch_size=32, lr=5e-5, lr_min=5e-6, warmup_steps=10,
                   weight_decay=0.0, eval_every=20, eval_batches=2, log_every=10)
    return c
