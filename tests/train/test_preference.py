"""Preference objectives: the reward model (Bradley-Terry on a scalar head) and DPO with its variants — the
formulas checked against log-probabilities computed here from the model's logits, the reference precomputed from
the model the policy starts at (so step 0 is the chance level), and short runs from a trained work directory."""

import json
import math

import jax
import numpy as np
import pytest

from llm_jax import config as config_lib
from llm_jax.data.preferences import PreferenceRows
from llm_jax.objectives import get_objective
from llm_jax.objectives.dpo import reference_logps


def pairs_file(path, n=60):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"{i % 10} {i // 10}?", "chosen": " yes", "rejected": " no"}) + "\n")
    return str(path)


def preference_cfg(base, path, objective, **more):
    sets = {"train.objective": objective, "data.preferences": path, "checkpoint.restore_from": base,
            "train.steps": "30", "train.eval_every": "0", "train.lr": "3e-3", "train.batch_size": "8"}
    return config_lib.load_config(f"{base}/config.json", sets | {k: str(v) for k, v in more.items()})


def batch_of(rows, n=4):
    return {k: np.stack([rows[i][k] for i in range(n)]) for k in rows[0]}


def by_hand_logps(model, params, batch):
    """log p(reply) per side from the full logits, gathered and summed with numpy (not the objective's code)."""
    out = []
    for side in ("chosen", "rejected"):
        logits = np.asarray(model.apply({"params": params}, batch[f"{side}_inputs"]), np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        picked = np.take_along_axis(logp, batch[f"{side}_targets"][..., None], -1)[..., 0]
        out.append((picked * batch[f"{side}_weights"]).sum(1))
    return out


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "hinge"])
def test_dpo_losses_match_their_formulas(trained, tmp_path, loss):
    from llm_jax.data.preferences import load_preferences
    from llm_jax.infer.load import load_workdir
    _, base = trained
    cfg = preference_cfg(base, pairs_file(tmp_path / "p.jsonl"), "dpo", **{"train.dpo_loss": loss,
                                                                          "train.dpo_beta": 0.5,
                                                                          "train.dpo_label_smoothing": 0.1})
    loaded = load_workdir(base)
    rows = load_preferences(cfg, log=lambda _: None).train
    rows.extra.update(reference_logps(loaded.model, loaded.params, rows))
    batch = batch_of(rows)
    objective = get_objective("dpo", cfg.train)
    # the reference is the policy: h = 0, every loss at its h = 0 value, margins 0
    losses, weights, sown = objective.losses(loaded.model, loaded.params, batch, None, True)
    at_zero = {"sigmoid": math.log(2), "ipo": (1 / (2 * 0.5)) ** 2, "hinge": 1.0}[loss]
    np.testing.assert_allclose(np.asarray(losses)[:, 0], at_zero, rtol=1e-5)
    assert float(sown.stats["margin"]) == pytest.approx(0, abs=1e-5)  # (h's sign at 0 is rounding: no accuracy)
    # another policy: the loss from log-probabilities computed here
    policy = jax.tree.map(lambda x: x * 1.05, loaded.params)
    pi_c, pi_r = by_hand_logps(loaded.model, policy, batch)
    h = (pi_c - batch["chosen_ref_logp"][:, 0]) - (pi_r - batch["rejected_ref_logp"][:, 0])
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    expected = {"sigmoid": -0.9 * np.log(sig(0.5 * h)) - 0.1 * np.log(sig(-0.5 * h)),
                "ipo": (h - 1 / (2 * 0.5)) ** 2, "hinge": np.maximum(0, 1 - 0.5 * h)}[loss]
    losses, _, sown = objective.losses(loaded.model, policy, batch, None, True)
    assert np.abs(h).max() > 1e-3
    np.testing.assert_allclose(np.asarray(losses)[:, 0], expected, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(float(sown.stats["rewards_chosen"]),
                               np.mean(0.5 * (pi_c - batch["chosen_ref_logp"][:, 0])), rtol=1e-4, atol=1e-5)


def test_dpo_run_prefers_the_chosen_reply(trained, tmp_path):
    from llm_jax.train.loop import train
    _, base = trained
    lines = []
    summary = train(preference_cfg(base, pairs_file(tmp_path / "p.jsonl"), "dpo", **{"train.dpo_beta": 0.5}),
                    str(tmp_path / "dpo"), log=lines.append)
    first = json.loads(open(tmp_path / "dpo" / "metrics.jsonl").readline())
    assert any(line.startswith("dpo: reference log-probabilities of") for line in lines), lines
    assert first["eval_loss"] == pytest.approx(math.log(2), abs=1e-4) and abs(first["eval_margin"]) < 1e-4
    assert summary["eval_accuracy"] == 1.0 and summary["eval_margin"] > 1.0 and summary["eval_loss"] < 0.3, summary


def test_reward_model_learns_the_preference_and_its_head_starts_fresh(trained, tmp_path):
    from llm_jax.train.loop import train
    _, base = trained
    lines = []
    cfg = preference_cfg(base, pairs_file(tmp_path / "p.jsonl"), "reward", **{"model.value_head": "true"})
    summary = train(cfg, str(tmp_path / "rm"), log=lines.append)
    assert any("value_head from initialisation" in line for line in lines), lines
    first = json.loads(open(tmp_path / "rm" / "metrics.jsonl").readline())
    assert abs(first["eval_loss"] - math.log(2)) < 0.05  # a fresh 0.02-std head: r_c ~ r_r
    assert summary["eval_pairwise_accuracy"] == 1.0 and summary["eval_loss"] < 0.2, summary
    with pytest.raises(config_lib.ConfigError, match="model.value_head=true"):
        preference_cfg(base, str(tmp_path / "p.jsonl"), "reward")


def test_preference_rows_hold_both_sides(trained, tmp_path):
    from llm_jax.data.preferences import load_preferences
    _, base = trained
    cfg = preference_cfg(base, pairs_file(tmp_path / "p.jsonl"), "dpo")
    rows = load_preferences(cfg, log=lambda _: None).train
    assert isinstance(rows, PreferenceRows)
    row = rows[0]
    for side, reply in (("chosen", " yes"), ("rejected", " no")):
        w = row[f"{side}_weights"] > 0
        trained_ids = row[f"{side}_targets"][w]
        tok = load_preferences(cfg, log=lambda _: None).tokenizer
        assert trained_ids[-1] == tok.eos_id and tok.decode(trained_ids[:-1]) == reply
    assert row["weights"].shape == (1,)
