"""GRPO and PPO: the losses against their formulas computed here from the model's logits and values, GAE against
its definition as a discounted sum, the rollout bookkeeping (prompts, replies, group advantages), and short runs
from a trained work directory that start at the reference (KL 0), score their replies and resume bit for bit."""

import json
import re
import shutil

import jax
import numpy as np
import pytest
from helpers import comparison_sft_file, run_cli

from llm_jax import config as config_lib
from llm_jax.objectives import get_objective
from llm_jax.objectives import ppo
from llm_jax.train import rollouts


def grpo_sets(base, data) -> dict:
    return {"train.objective": "grpo", "data.sft": data, "checkpoint.restore_from": base, "data.pack": "false",
            "train.steps": "6", "train.batch_size": "8", "train.rl_group": "4", "train.rl_max_new_tokens": "4",
            "train.rl_reward": "overlap", "train.lr": "3e-3", "train.eval_every": "3", "train.eval_batches": "1",
            "train.log_every": "1", "checkpoint.every": "3"}


def grpo_cfg(base, data, **more):
    return config_lib.load_config(f"{base}/config.json", grpo_sets(base, data) | {k: str(v) for k, v in more.items()})


def by_hand_logps(model, params, batch):
    logits = np.asarray(model.apply({"params": params}, batch["inputs"]), np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]


def test_rewards_are_the_config_choices_and_advantages_are_normalised_within_groups():
    assert tuple(rollouts.REWARDS) == config_lib.CHOICES["train.rl_reward"]
    assert rollouts.REWARDS["exact"]([5, 2], [5, 2]) == 1.0 and rollouts.REWARDS["exact"]([5], [5, 2]) == 0.0
    assert rollouts.REWARDS["overlap"]([5, 3, 2], [5, 2]) == pytest.approx(1 / 3)
    a = rollouts.group_advantages(np.asarray([1, 0, 0, 0, 1, 1, 1, 1], np.float32), 4)
    np.testing.assert_allclose(a[:4], np.asarray([0.75, -0.25, -0.25, -0.25]) / (np.sqrt(3) / 4 + 1e-4), rtol=1e-5)
    np.testing.assert_array_equal(a[4:], 0.0)  # a group that scored alike carries no signal


def test_a_fine_tuning_row_splits_into_prompt_and_reply_and_back(trained, tmp_path):
    from llm_jax.data.sft import load_sft
    _, base = trained
    cfg = grpo_cfg(base, comparison_sft_file(tmp_path / "c.jsonl"))
    data = load_sft(cfg, log=lambda _: None)
    row = data.train[0]
    prompt, reply = rollouts.split_row(row)
    assert data.tokenizer.decode(reply[:-1]) in (" yes", " no") and reply[-1] == data.tokenizer.eos_id
    assert data.tokenizer.decode(prompt).endswith("?")
    rebuilt = rollouts.reply_rows([prompt], [reply], cfg.model.seq_len, pad_id=data.train.pad_id)
    for k in ("inputs", "targets", "weights", "positions", "segment_ids"):
        np.testing.assert_array_equal(rebuilt[k][0], row[k], err_msg=k)


def test_grpo_loss_is_the_clipped_policy_gradient_plus_the_k3_kl(trained):
    from llm_jax.infer.load import load_workdir
    _, base = trained
    loaded = load_workdir(base)
    model, params = loaded.model, loaded.params
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    replies = [[20, 21, 2], [22, 2], [23, 24, 25, 26], [27, 28]]
    batch = rollouts.reply_rows(prompts, replies, 16, pad_id=0)
    sampler = jax.tree.map(lambda x: x * 1.1, params)
    reference = jax.tree.map(lambda x: x * 0.9, params)
    batch["old_logp"] = by_hand_logps(model, sampler, batch).astype(np.float32)
    batch["ref_logp"] = by_hand_logps(model, reference, batch).astype(np.float32)
    batch["advantages"] = np.asarray([[1.0], [-1.0], [0.5], [-2.0]], np.float32) * batch["weights"]
    batch["rewards"] = np.asarray([[1.0], [0.0], [0.5], [0.0]], np.float32)
    train_cfg = config_lib.default_config().train
    train_cfg.update(rl_clip=0.1, rl_kl=0.3)
    losses, weights, sown = get_objective("grpo", train_cfg).losses(model, params, batch, None, True)
    logp = by_hand_logps(model, params, batch)
    ratio = np.exp(logp - batch["old_logp"])
    a = batch["advantages"]
    d = batch["ref_logp"] - logp
    expected = -np.minimum(ratio * a, np.clip(ratio, 0.9, 1.1) * a) + 0.3 * (np.exp(d) - d - 1)
    w = batch["weights"] > 0
    assert np.abs(ratio[w] - 1).max() > 0.1  # some ratios are clipped, so the clip is exercised
    np.testing.assert_allclose(np.asarray(losses)[w], expected[w], rtol=2e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(weights), batch["weights"])
    assert float(sown.stats["kl"]) == pytest.approx(float((np.exp(d) - d - 1)[w].mean()), rel=1e-4)
    assert float(sown.stats["clip_fraction"]) == pytest.approx(float((np.abs(ratio - 1) > 0.1)[w].mean()))
    assert float(sown.stats["reward"]) == pytest.approx(0.375)


@pytest.mark.parametrize("objective, epochs", [("grpo", 1), ("ppo", 1), ("grpo", 2)])
def test_a_run_starts_at_the_reference_scores_replies_and_resumes_bit_for_bit(trained, tmp_path, objective, epochs):
    from llm_jax.train.loop import train
    _, base = trained
    more = {"train.objective": objective, "train.rl_epochs": epochs}
    more |= {"model.value_head": "true"} if objective == "ppo" else {}
    more |= {"train.rl_clip": "0.02"} if epochs > 1 else {}  # one update moves some ratios past 1.02
    data = comparison_sft_file(tmp_path / "c.jsonl")
    cfg = grpo_cfg(base, data, **more)
    full, lines = tmp_path / "full", []
    train(cfg, str(full), log=lines.append)
    assert any(line.startswith(f"{objective}: reference") for line in lines), lines
    records = [json.loads(line) for line in open(full / "metrics.jsonl")]
    assert records[0]["eval_kl"] == 0.0 and 0 <= records[0]["eval_reward"] <= 1  # the policy is the reference
    steps = [r for r in records if "stats/reward" in r]
    assert len(steps) == 6 and all(r["stats/reply_tokens"] >= 1 for r in steps)
    assert steps[-1]["stats/kl"] > 0  # the policy moved away from the reference
    assert objective == "grpo" or all(r["stats/value_loss"] > 0 for r in steps)
    if epochs == 2:  # steps 0, 2, 4 sample (ratio 1: nothing clipped); 1, 3, 5 train on the same replies again
        firsts, again = steps[0::2], steps[1::2]
        assert all(a["stats/reward"] == b["stats/reward"] for a, b in zip(firsts, again))
        assert all(r["stats/clip_fraction"] == 0 for r in firsts) and max(r["stats/clip_fraction"] for r in again) > 0
        # checkpoints at steps 3 and 6: rollout 2 (which step 3 resumes into) and the newest stay; rollout 0 goes
        # unless checkpoint 3 was still being written when step 4 sampled
        kept = {p.name for p in (full / "rollouts").iterdir()}
        assert {"step_000000002.npz", "step_000000004.npz"} <= kept <= {"step_000000000.npz", "step_000000002.npz",
                                                                         "step_000000004.npz"}
    resumed = tmp_path / "resumed"  # what an interruption after step 3's checkpoint leaves
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints" / "6")
    kept = [line for line in open(full / "metrics.jsonl") if json.loads(line)["step"] <= 3]
    (resumed / "metrics.jsonl").write_text("".join(kept))
    train(cfg, str(resumed), log=lambda _: None)
    later = lambda path: [{k: v for k, v in json.loads(line).items() if k not in ("tokens_per_sec", "mfu", "run_id")}  # noqa: E731
                          for line in open(path / "metrics.jsonl") if json.loads(line)["step"] > 3]
    assert later(resumed) == later(full) and len(later(full)) == 3
    if epochs == 2:  # a kept rollout sampled with other settings is sampled again, with a warning
        changed = tmp_path / "changed"
        shutil.copytree(full, changed)
        shutil.rmtree(changed / "checkpoints" / "6")
        lines = []
        train(grpo_cfg(base, data, **more, **{"train.rl_temperature": 0.5}), str(changed), log=lines.append)
        assert sum("the rollout of step 2 was sampled with other settings" in line for line in lines) == 1


def test_gae_is_the_discounted_sum_of_td_errors_over_each_reply():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(2, 7)), rng.normal(size=(2, 7))
    weights = np.zeros((2, 7), np.float32)
    weights[0, 2:6], weights[1, 1:3] = 1, 1
    gamma, lam = 0.9, 0.8
    advantages, returns = ppo.gae(rewards, values, weights, gamma, lam)
    for b in range(2):
        at = list(np.flatnonzero(weights[b]))
        v_next = [values[b, t] for t in at[1:]] + [0.0]  # the episode ends after the reply
        deltas = [rewards[b, t] + gamma * v_next[i] - values[b, t] for i, t in enumerate(at)]
        for i, t in enumerate(at):
            expected = sum((gamma * lam) ** k * deltas[i + k] for k in range(len(at) - i))
            assert advantages[b, t] == pytest.approx(expected, rel=1e-5)
            assert returns[b, t] == pytest.approx(expected + values[b, t], rel=1e-5)
    assert not advantages[weights == 0].any() and not returns[weights == 0].any()


def test_ppo_loss_is_the_clipped_policy_gradient_plus_the_clipped_value_loss(trained):
    from llm_jax.train.trainable import build_trainable
    _, base = trained
    cfg = config_lib.load_config(f"{base}/config.json", {"model.value_head": "true"})
    trainable = build_trainable(cfg)
    model, params = trainable.model, trainable.init_state().params
    batch = rollouts.reply_rows([[5, 6, 7], [8, 9]], [[20, 21, 2], [22, 23, 24, 2]], 16, pad_id=0)
    w = batch["weights"] > 0
    rng = np.random.default_rng(1)
    logp = by_hand_logps(model, params, batch)
    values = np.asarray(model.apply({"params": params}, batch["inputs"], values=True), np.float64)
    batch["old_logp"] = (logp + rng.normal(scale=0.3, size=logp.shape)).astype(np.float32)
    batch["ref_logp"] = (logp + rng.normal(scale=0.3, size=logp.shape)).astype(np.float32)
    batch["old_values"] = ((values + rng.normal(scale=0.5, size=values.shape)) * w).astype(np.float32)
    batch["returns"] = (rng.normal(size=values.shape) * w).astype(np.float32)
    batch["advantages"] = (rng.normal(size=values.shape) * w).astype(np.float32)
    batch["rewards"] = np.asarray([[1.0], [0.0]], np.float32)
    train_cfg = config_lib.default_config().train
    train_cfg.update(rl_clip=0.2, rl_value_coef=0.5)
    losses, _, sown = get_objective("ppo", train_cfg).losses(model, params, batch, None, True)
    ratio, a = np.exp(logp - batch["old_logp"]), batch["advantages"]
    old, ret = batch["old_values"], batch["returns"]
    value_loss = 0.5 * np.maximum((values - ret) ** 2, (old + np.clip(values - old, -0.2, 0.2) - ret) ** 2)
    expected = -np.minimum(ratio * a, np.clip(ratio, 0.8, 1.2) * a) + 0.5 * value_loss
    np.testing.assert_allclose(np.asarray(losses)[w], expected[w], rtol=2e-4, atol=1e-5)
    assert float(sown.stats["value_loss"]) == pytest.approx(float(value_loss[w].mean()), rel=1e-4)


def test_ppo_targets_put_the_whitened_score_on_the_last_token_and_the_kl_penalty_on_every_token():
    t = config_lib.default_config().train
    t.update(rl_kl=0.1, rl_gamma=1.0, rl_lambda=1.0, rl_whiten_rewards=True)
    weights = np.zeros((2, 6), np.float32)
    weights[0, 1:4], weights[1, 2:4] = 1, 1
    batch = {"weights": weights, "old_logp": np.full((2, 6), -1.0, np.float32) * weights,
             "ref_logp": np.full((2, 6), -1.5, np.float32) * weights, "old_values": np.zeros((2, 6), np.float32)}
    out = rollouts.ppo_targets(batch, np.asarray([3.0, 1.0], np.float32), t)
    # gamma = lambda = 1, values 0: the return of a token is the sum of the rewards from it to the end
    # score whitened: (+1, -1); per-token reward -0.1 * (-1 - -1.5) = -0.05
    np.testing.assert_allclose(out["returns"][0, 1:4], [1 - 0.15, 1 - 0.10, 1 - 0.05], rtol=1e-5)
    np.testing.assert_allclose(out["returns"][1, 2:4], [-1 - 0.10, -1 - 0.05], rtol=1e-5)
    adv = out["advantages"][weights > 0]
    assert adv.mean() == pytest.approx(0, abs=1e-6) and adv.std() == pytest.approx(1, rel=1e-4)


def test_a_reward_model_must_have_a_value_head_over_the_same_vocabulary(trained):
    from llm_jax.errors import UserError
    cfg, base = trained
    with pytest.raises(UserError, match="must be a reward model"):
        rollouts.RewardModel(base, cfg.model.vocab_size)


def test_rlhf_rounds_label_pairs_train_the_reward_model_further_and_chain(trained, tmp_path, monkeypatch):
    from llm_jax.train.loop import train
    from llm_jax.train.rlhf import rlhf
    _, base = trained
    with open(tmp_path / "p.jsonl", "w") as f:
        for a in range(10):
            for b in range(10):
                right, wrong = (" yes", " no") if a < b else (" no", " yes")
                f.write(json.dumps({"prompt": f"{a} {b}?", "chosen": right, "rejected": wrong}) + "\n")
    train(config_lib.load_config(f"{base}/config.json", {
        "train.objective": "reward", "data.preferences": str(tmp_path / "p.jsonl"), "checkpoint.restore_from": base,
        "model.value_head": "true", "train.steps": "3", "train.eval_every": "0"}), str(tmp_path / "rm"),
        log=lambda _: None)
    cfg = grpo_cfg(base, comparison_sft_file(tmp_path / "c.jsonl"), **{
        "train.objective": "ppo", "model.value_head": "true", "train.reward_model": str(tmp_path / "rm"),
        "train.steps": "2", "train.rl_group": "1"})
    # the 20-step base model never says " yes" or " no": label by the first token's id, which its samples vary in
    monkeypatch.setitem(rollouts.REWARDS, "overlap", lambda reply, reference: float(reply[0]))
    loop, lines = tmp_path / "loop", []
    history = rlhf(cfg, str(loop), rounds=2, prompts=16, group=4, reward_steps=2, log=lines.append)
    assert [h["round"] for h in history] == [1, 2] and history[0]["pairs"] >= 2, history
    records = [json.loads(line) for line in open(loop / "round1" / "prefs.jsonl")]
    assert all(r["chosen_score"] > r["rejected_score"] and r["prompt"].endswith("?") for r in records), records
    assert history[0]["reward_model"] == str(loop / "round1" / "reward")
    assert any(f"PPO from {loop / 'round1' / 'policy'} against the reward model {loop / 'round1' / 'reward'}" in line
               for line in lines), lines
    again = []  # started again, the loop finds every stage done
    rlhf(cfg, str(loop), rounds=2, prompts=16, group=4, reward_steps=2, log=again.append)
    assert sum("nothing to do" in line for line in again) == 4
    assert sum("already labelled" in line for line in again) == 2


def test_grpo_shards_like_pretraining_and_its_greedy_rollouts_match_one_device(trained, tmp_path):
    from llm_jax.train.loop import train
    _, base = trained
    data = comparison_sft_file(tmp_path / "c.jsonl")
    sets = {"train.steps": "2", "train.eval_every": "0"}
    train(grpo_cfg(base, data, **sets), str(tmp_path / "one"), log=lambda _: None)
    flags = [f"--config.{k}={v}" for k, v in {**grpo_sets(base, data), **sets}.items()]
    proc = run_cli("train", "--config", f"{base}/config.json", "--workdir", tmp_path / "four", *flags,
                   "--config.mesh.data=2", "--config.mesh.fsdp=2",
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "'data': 2, 'fsdp': 2" in proc.stdout and "4 cpu device(s)" in proc.stdout, proc.stdout
    first = lambda d: json.loads(open(tmp_path / d / "metrics.jsonl").readline())  # noqa: E731
    assert first("four")["eval_kl"] == 0.0
    assert first("four")["eval_reward"] == pytest.approx(first("one")["eval_reward"], abs=1e-6)


@pytest.mark.parametrize("sets, message", [
    ({"train.rl_group": "1"}, "train.rl_group=1 must be >= 2"),
    ({"train.rl_group": "3"}, "divide train.batch_size=8"),
    ({"data.pack": "true"}, "data.pack=false"),
    ({"checkpoint.restore_from": ""}, "set checkpoint.restore_from"),
    ({"train.rl_clip": "1.5"}, "rl_clip=1.5 in (0, 1)"),
    ({"train.objective": "ppo"}, "set model.value_head=true"),
    ({"train.objective": "sft", "train.reward_model": "rm"}, "scores the rollouts of grpo / ppo only"),
])
def test_policy_optimisation_settings_are_checked(sets, message):
    base = {"train.objective": "grpo", "data.sft": "prompts.jsonl", "checkpoint.restore_from": "runs/sft",
            "data.pack": "false", "train.batch_size": "8", "train.rl_group": "4"}
    config_lib.load_config(None, base)  # the valid one
    with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
        config_lib.load_config(None, {**base, **sets})
