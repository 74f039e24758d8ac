"""Rollouts for policy optimisation (train.objective=grpo or ppo): the batches are the policy's sampled replies.

The loader still reads fine-tuning rows (data.sft: prompt/completion or chat records, llm_jax/data/sft.py); a row's
prompt is its tokens before the first trained one and its reference reply the trained tokens (EOS included). Each
training step takes the first batch_size / G rows, samples G replies to each with the KV-cache sampler
(llm_jax/infer/decode.py; temperature train.rl_temperature, at most train.rl_max_new_tokens, seeds from the step
so a resumed run samples what the interrupted one would have) and scores them: a rule of `REWARDS`, or a reward
model's work directory (train.reward_model). The objective gets the replies with the per-token log-probabilities
of the sampling policy and of the reference (the model the run started from: checkpoint.restore_from) and
advantages: GRPO's group-normalised reward on every reply token, or PPO's GAE over the policy's own values
(`ppo_targets`). Held-out batches reply greedily to every row's prompt (the held-out reward).

With train.rl_epochs = E > 1 a rollout is sampled at every E-th step and trains that step and the next E - 1 (the
ratio to the sampling policy moves away from 1 and the clip acts; the prompts of those later steps are not used).
It is kept in <workdir>/rollouts/ while a checkpoint may resume into it, so a resumed run is bit-exact too.

Rewards are rules, checkable without a judge: `exact` = 1 when the reply's tokens equal the reference reply's
(EOS included: a reply must also stop), else 0; `overlap` = the share of the reference's positions the reply
reproduces, over the longer of the two (partial credit; 1 only for an exact reply).
"""

from __future__ import annotations

import json
import os
import time
import zipfile

import jax
import numpy as np

from llm_jax.checkpoint import checkpoint_dir
from llm_jax.errors import UserError
from llm_jax.fileio import atomic_path
from llm_jax.infer import decode
from llm_jax.infer.load import load_workdir
from llm_jax.objectives.grpo import token_logps
from llm_jax.objectives.ppo import gae, logps_and_values, whiten
from llm_jax.objectives.reward import last_trained
from llm_jax.train.reference import reference_params


def _exact(reply: list[int], reference: list[int]) -> float:
    return float(reply == reference)


def _overlap(reply: list[int], reference: list[int]) -> float:
    same = sum(a == b for a, b in zip(reply, reference))
    return same / max(len(reply), len(reference), 1)


ROLLOUTS = "rollouts"  # <workdir>/rollouts/step_<first step>.npz when train.rl_epochs > 1

REWARDS = {"exact": _exact, "overlap": _overlap}  # config.CHOICES["train.rl_reward"] (a test: equal)


def split_row(row: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, reference reply ids) of one unpacked fine-tuning row (inputs, targets, weights)."""
    trained = np.flatnonzero(row["weights"] > 0)
    if trained.size == 0:
        raise UserError("a fine-tuning row has no trained tokens: it has no reply to learn from")
    first, last = int(trained[0]), int(trained[-1])
    return row["inputs"][:first + 1].tolist(), row["targets"][first:last + 1].tolist()


def group_advantages(rewards_B: np.ndarray, group: int) -> np.ndarray:
    """(r - mean of its group) / (std of its group + 1e-4); rows [g*G, (g+1)*G) are one group."""
    r_GN = rewards_B.reshape(-1, group)
    return ((r_GN - r_GN.mean(axis=1, keepdims=True)) / (r_GN.std(axis=1, keepdims=True) + 1e-4)).reshape(-1)


def reply_rows(prompts: list[list[int]], replies: list[list[int]], seq_len: int, pad_id: int) -> dict:
    """Rows of prompt + reply: inputs, targets, weights (1 on the reply's tokens), segment_ids, positions."""
    B, L = len(prompts), seq_len
    out = {"inputs": np.full((B, L), pad_id, np.int32), "targets": np.full((B, L), pad_id, np.int32),
           "weights": np.zeros((B, L), np.float32), "segment_ids": np.zeros((B, L), np.int32),
           "positions": np.zeros((B, L), np.int32)}
    for b, (prompt, reply) in enumerate(zip(prompts, replies)):
        ids = (prompt + reply)[:L + 1]
        n = len(ids) - 1
        out["inputs"][b, :n], out["targets"][b, :n] = ids[:-1], ids[1:]
        out["weights"][b, len(prompt) - 1:n] = 1.0
        out["segment_ids"][b, :n], out["positions"][b, :n] = 1, np.arange(n)
    return out


class Rollouts:
    """feed(host batch, (split, index), policy params) -> the device batch of the policy's scored replies."""

    def __init__(self, cfg, trainable, data, workdir: str, log=print):
        t = cfg.train
        if jax.process_count() > 1:
            raise UserError(f"train.objective={t.objective!r} samples its rollouts in one process for now; run it "
                            f"on the devices of one host")
        self.cfg, self.trainable, self.ppo, self.log = cfg, trainable, t.objective == "ppo", log
        self.epochs, self.workdir, self.kept = t.rl_epochs, workdir, None
        self.group, self.rule = t.rl_group, REWARDS[t.rl_reward]
        self.eos_id, self.pad_id = data.tokenizer.eos_id, data.val.pad_id
        started = time.perf_counter()
        self.reference = reference_params(cfg, trainable)
        model = trainable.model
        self._logps = jax.jit(lambda p, b: token_logps(model, p, b, None, True)[0])
        self._logps_values = jax.jit(lambda p, b: logps_and_values(model, p, b, None, True)[:2])
        self.scorer = RewardModel(t.reward_model, cfg.model.vocab_size) if t.reward_model else None
        log(f"{t.objective}: reference {cfg.checkpoint.restore_from} ({time.perf_counter() - started:.0f}s); "
            f"{self.group} replies per prompt, reward "
            f"{'model ' + t.reward_model if t.reward_model else repr(t.rl_reward)}, temperature {t.rl_temperature}")

    def __call__(self, host: dict, where: tuple, params) -> dict:
        split, step = where
        if split == "train" and self.epochs > 1:
            return self.trainable.to_device(self._reused(host, step, params))
        return self.trainable.to_device(self._rollout(host, where, params))

    def _reused(self, host: dict, step: int, params) -> dict:
        """The rollout of step `step - step % rl_epochs`: sampled at that step and kept in memory and in
        <workdir>/rollouts (a resumed run trains on what the interrupted one would have)."""
        first = step - step % self.epochs
        if self.kept is not None and self.kept[0] == first:
            return self.kept[1]
        path = os.path.join(self.workdir, ROLLOUTS, f"step_{first:09d}.npz")
        batch = None
        if first < step:
            try:
                with np.load(path) as saved:
                    batch = {k: saved[k] for k in saved.files if k != "settings"}
                    if str(saved["settings"]) != self._settings():
                        batch = None
                        self.log(f"warning: the rollout of step {first} was sampled with other settings: sampling it "
                                 f"again from the current policy (the run no longer repeats the interrupted one)")
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                self.log(f"warning: the rollout of step {first} could not be read ({e}): sampling it again from "
                         f"the current policy (the run no longer repeats the interrupted one exactly)")
        if batch is None:
            batch = self._rollout(host, ("train", first), params)
            self._keep(path, batch, first)
        self.kept = (first, batch)
        return batch

    def _settings(self) -> str:
        """What a kept rollout depends on besides the step: it is sampled again when any of it changed."""
        t = self.cfg.train
        return json.dumps([t.objective, t.seed, t.batch_size, t.rl_group, t.rl_reward, t.reward_model,
                           t.rl_temperature, t.rl_max_new_tokens, t.rl_epochs, self.cfg.model.seq_len])

    def _keep(self, path: str, batch: dict, first: int) -> None:
        """Writes the rollout atomically; removes those older than the rollout the newest committed checkpoint
        resumes into (a save still in flight is newer than every committed one, so its rollout stays; an older
        checkpoint used because a newer one is damaged samples its rollout again, with a warning)."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, settings=np.asarray(self._settings()), **batch)
        directory = checkpoint_dir(self.workdir)
        committed = [int(n) for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(directory) else []
        if not committed:
            return
        oldest_needed = max(committed) - max(committed) % self.epochs
        for name in os.listdir(os.path.dirname(path)):
            kept_step = name.removeprefix("step_").removesuffix(".npz")
            if kept_step.isdigit() and int(kept_step) < oldest_needed:
                os.remove(os.path.join(os.path.dirname(path), name))

    def _rollout(self, host: dict, where: tuple, params) -> dict:
        """The host batch of replies to `host`'s prompts: sampled (train) or greedy (held-out), scored."""
        split, index = where
        t, seq_len = self.cfg.train, self.cfg.model.seq_len
        rows = [{k: v[b] for k, v in host.items()} for b in range(len(host["inputs"]))]
        if split == "train":
            picked = [split_row(r) for r in rows[:len(rows) // self.group]]
            pairs = [p for p in picked for _ in range(self.group)]
            temperature, seed = t.rl_temperature, rollout_seed(t.seed, index)
        else:
            pairs, temperature, seed = [split_row(r) for r in rows], 0.0, None
        prompts = [p for p, _ in pairs]
        replies = sample_replies(self.trainable.model, params, prompts, self.cfg, self.eos_id, temperature, seed)
        batch = reply_rows(prompts, replies, seq_len, self.pad_id)
        device = self.trainable.to_device(batch)
        if self.scorer:
            scores = self.scorer(device)
        else:
            scores = np.asarray([self.rule(reply, ref) for reply, (_, ref) in zip(replies, pairs)], np.float32)
        batch["rewards"] = scores[:, None]
        batch["ref_logp"] = np.asarray(jax.device_get(self._logps(self.reference, device)), np.float32)
        weights = batch["weights"]
        if self.ppo:
            old_logp, old_values = (np.asarray(x, np.float32)
                                    for x in jax.device_get(self._logps_values(params, device)))
            batch["old_logp"], batch["old_values"] = old_logp, old_values * weights
            batch.update(ppo_targets(batch, scores, t))
        else:
            batch["old_logp"] = np.asarray(jax.device_get(self._logps(params, device)), np.float32)
            per_reply = group_advantages(scores, self.group) if split == "train" else np.zeros_like(scores)
            batch["advantages"] = (per_reply[:, None] * weights).astype(np.float32)
        return batch


def rollout_seed(seed: int, index: int) -> int:
    """The first sampling seed of rollout `index` (a step, or an RLHF round's labelling): rows add their number."""
    return seed * 1_000_003 + index * 7919


def sample_replies(model, params, prompts: list[list[int]], cfg, eos_id: int, temperature: float,
                   seed: int | None) -> list[list[int]]:
    """A reply to each prompt (greedy when temperature is 0; else row b samples with seed + b), at most
    train.rl_max_new_tokens and within model.seq_len; a reply that stopped on EOS ends with it."""
    seq_len = cfg.model.seq_len
    budgets = [min(cfg.train.rl_max_new_tokens, seq_len - len(p)) for p in prompts]
    if min(budgets) < 1:
        raise UserError(f"a prompt of {max(map(len, prompts))} tokens leaves no room for a reply within "
                        f"model.seq_len={seq_len}: drop such records or raise the length")
    seeds = None if seed is None else [(seed + b) % 2**32 for b in range(len(prompts))]
    result = decode.generate(model, params, prompts, budgets, seq_len, sampling=decode.Sampling(temperature),
                             seeds=seeds, eos_id=eos_id)
    # a reply that stopped before its budget stopped on EOS, which the sampler does not return: it is trained
    return [ids + [eos_id] if len(ids) < n else ids for ids, n in zip(result.new_ids, budgets)]


def ppo_targets(batch: dict, scores: np.ndarray, t) -> dict:
    """{advantages, returns} (B, L): per-token rewards -beta (log p_sampler - log p_ref) plus the (whitened) score
    on each reply's last token, GAE over the old values, advantages whitened over the reply tokens."""
    weights = batch["weights"]
    if t.rl_whiten_rewards and len(scores) > 1:
        scores = whiten(scores, np.ones_like(scores))
    rewards = -t.rl_kl * (batch["old_logp"] - batch["ref_logp"]) * weights
    last = weights.shape[1] - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
    rewards[np.arange(len(scores)), last] += scores
    advantages, returns = gae(rewards, batch["old_values"], weights, t.rl_gamma, t.rl_lambda)
    return {"advantages": whiten(advantages, weights), "returns": returns}


class RewardModel:
    """Scores replies with a reward model's work directory (train.objective=reward): its value at each reply's
    last token."""

    def __init__(self, workdir: str, vocab_size: int):
        loaded = load_workdir(workdir)
        if not loaded.cfg.model.value_head or loaded.cfg.model.vocab_size != vocab_size:
            raise UserError(f"train.reward_model={workdir!r} must be a reward model (model.value_head=true) over the "
                            f"policy's tokenizer (vocab_size {vocab_size}; it has {loaded.cfg.model.vocab_size})")
        model = loaded.model
        self.params = loaded.params
        self._score = jax.jit(lambda p, b: last_trained(model.apply({"params": p}, b["inputs"], b["positions"],
                                                                    b["segment_ids"], values=True), b["weights"]))

    def __call__(self, device_batch: dict) -> np.ndarray:
        return np.asarray(jax.device_get(self._score(self.params, device_batch)), np.float32)
