"""ppo_tiny: RLHF with PPO: the fine-tuned tiny model optimised against the reward model of reward_tiny.

Purpose: the guide's RLHF stage 2 on a 2-core CPU: the policy (sft_tiny's result, with a value head on its trunk)
         samples one reply to each of 32 training prompts per step; reward_tiny's model scores each reply, the
         scores are whitened, a per-token KL penalty to the reference (beta 0.05) is added and GAE (gamma 1,
         lambda 0.95) over the policy's values gives the advantages of the clipped objective (clip 0.2, value
         loss weight 0.1). Checkable: the held-out exact match, a rule the reward model only approximates.
Run:     llm-jax data make-sft --output runs/sft_data
         llm-jax train --config configs/sft_tiny.py --workdir runs/sft_tiny
         llm-jax train --config configs/reward_tiny.py --workdir runs/reward_tiny
         llm-jax train --config configs/ppo_tiny.py --workdir runs/ppo_tiny
         llm-jax eval instruct --workdir runs/ppo_tiny --data runs/sft_data/test.jsonl
Reaches: experiments/align/results/README.md (held-out reward and KL curves, exact match before/after).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "ppo_tiny"
    c.model.value_head = True                 # PPO's values, on the policy's trunk (starts from initialisation)
    c.data.update(sft="runs/sft_data/train.jsonl", loss_mask="completion", pack=False)
    c.checkpoint.update(restore_from="runs/sft_tiny", restore_mode="params", every=0)
    c.train.update(objective="ppo", reward_model="runs/reward_tiny", rl_group=1, rl_temperature=1.0,
                   rl_max_new_tokens=16, rl_clip=0.2, rl_kl=0.05, rl_value_coef=0.1, rl_gamma=1.0, rl_lambda=0.95,
                   steps=100, batch_size=32, lr=5e-5, lr_min=5e-6, warmup_steps=10, weight_decay=0.0,
                   eval_every=20, eval_batches=2, log_every=10)
    return c
