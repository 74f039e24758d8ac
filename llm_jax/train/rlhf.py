"""The guide's RLHF stage 3 as a loop: optimise -> generate -> score -> update the reward model -> optimise again.

`rlhf(cfg, workdir, rounds)` takes a PPO config (train.objective=ppo, train.reward_model = the reward model to start
with, checkpoint.restore_from = the policy to start from). Round r, in `workdir/round<r>/`:

1. `policy/`: PPO from the previous round's policy against the current reward model (the KL reference is the
   policy the round starts from).
2. `prefs.jsonl`: the new policy samples `group` replies (train.rl_temperature) to each of n = `prompts` training
   prompts (rows [(r-1) n, r n) of the training split, cycled); the labeller — the rule of train.rl_reward,
   standing in for the human raters no dataset here has — scores them, and each prompt whose best and worst
   replies differ gives one preference pair (best chosen). The record carries both scores.
3. `reward/`: the reward model trained further (Bradley-Terry, `reward_steps` steps) on those pairs, from the
   current one; it scores the next round.

Every stage is an ordinary run or an atomically written file, so an interrupted loop started again resumes: a
finished run says there is nothing to do, a written pair file is read back.
"""

from __future__ import annotations

import json
import os

import numpy as np

from llm_jax import config as config_lib
from llm_jax import fileio
from llm_jax.data.sft import load_sft
from llm_jax.errors import UserError
from llm_jax.infer.load import load_workdir
from llm_jax.train.loop import train
from llm_jax.train.rollouts import REWARDS, rollout_seed, sample_replies, split_row


def label_pairs(cfg, policy_dir: str, out: str, prompts: int, group: int, offset: int, log=print) -> int:
    """Writes `out` (JSONL of {prompt, chosen, rejected, chosen_score, rejected_score}) from `prompts` training
    prompts starting at row `offset`; returns the number of pairs."""
    if os.path.exists(out):
        with open(out, encoding="utf-8") as f:
            n = sum(1 for line in f if line.strip())
        log(f"pairs: {n} already labelled in {out}")
        return n
    data, policy = load_sft(cfg, log=lambda _: None), load_workdir(policy_dir)
    rows = data.train  # the training split (the validation split measures the policy's held-out reward)
    tok, rule = data.tokenizer, REWARDS[cfg.train.rl_reward]
    chosen = [split_row(rows[(offset + i) % len(rows)]) for i in range(prompts)]
    asked = [p for p, _ in chosen for _ in range(group)]
    replies = sample_replies(policy.model, policy.params, asked, cfg, tok.eos_id, cfg.train.rl_temperature,
                             rollout_seed(cfg.train.seed, offset))
    text = lambda ids: tok.decode([i for i in ids if i != tok.eos_id])  # noqa: E731
    records = []
    for i, (prompt, reference) in enumerate(chosen):
        mine = replies[i * group:(i + 1) * group]
        scores = [rule(reply, reference) for reply in mine]
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        if scores[best] > scores[worst] and text(mine[best]) != text(mine[worst]):
            records.append({"prompt": tok.decode(prompt), "chosen": text(mine[best]), "rejected": text(mine[worst]),
                            "chosen_score": scores[best], "rejected_score": scores[worst]})
    fileio.atomic_write(out, "".join(json.dumps(r) + "\n" for r in records))
    log(f"pairs: {len(records)} of {prompts} prompts had replies the labeller ({cfg.train.rl_reward!r}) told apart "
        f"-> {out}")
    return len(records)


def rlhf(cfg, workdir: str, rounds: int, prompts: int = 256, group: int = 4, reward_steps: int = 50,
         log=print) -> list[dict]:
    """Runs (or resumes) `rounds` rounds; returns one summary per round."""
    if cfg.train.objective != "ppo" or not cfg.train.reward_model:
        raise UserError("llm-jax rlhf loops PPO against a reward model it keeps training: give a config with "
                        "train.objective=ppo and train.reward_model=WORKDIR (e.g. configs/ppo_tiny.py)")
    if group < 2:
        raise UserError(f"--group {group}: the labeller compares replies to one prompt; sample at least 2")
    policy, reward = cfg.checkpoint.restore_from, cfg.train.reward_model
    history = []
    for r in range(1, rounds + 1):
        here = os.path.join(workdir, f"round{r}")
        log(f"round {r}/{rounds}: PPO from {policy} against the reward model {reward}")
        round_cfg = config_lib.apply_overrides(cfg.copy_and_resolve_references(), {
            "checkpoint.restore_from": policy, "train.reward_model": reward})
        config_lib.validate(round_cfg)
        ppo = train(round_cfg, os.path.join(here, "policy"), log=lambda line, r=r: log(f"  [round {r} ppo] {line}"))
        policy = os.path.join(here, "policy")
        n = label_pairs(round_cfg, policy, os.path.join(here, "prefs.jsonl"), prompts, group, (r - 1) * prompts,
                        log=lambda line: log(f"  [round {r}] {line}"))
        summary = {"round": r, "policy": policy, "pairs": n, **{f"ppo_{k}": v for k, v in ppo.items()
                                                                  if isinstance(v, (int, float))}}
        if n >= 2:  # the reward run needs a training and a validation pair
            reward_cfg = config_lib.load_config(os.path.join(reward, "config.json"), {
                "data.preferences": os.path.join(here, "prefs.jsonl"), "checkpoint.restore_from": reward,
                "checkpoint.restore_mode": "params", "train.steps": str(reward_steps)})
            rm = train(reward_cfg, os.path.join(here, "reward"),
                       log=lambda line, r=r: log(f"  [round {r} reward] {line}"))
            reward = os.path.join(here, "reward")
            summary.update({f"reward_{k}": v for k, v in rm.items() if isinstance(v, (int, float))})
        else:
            log(f"  [round {r}] fewer than 2 pairs: the reward model stays {reward}")
        summary["reward_model"] = reward
        history.append(summary)
    return history
