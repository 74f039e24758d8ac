"""Reward model and DPO on rule-labelled preferences, from the fine-tuned tiny model; held-out numbers.

1. Start: experiments/finetune/run.py's full SFT model (runs/finetune/full) and its data (runs/finetune/data:
   `make-sft`'s tasks and their preference pairs — the right sum / count / reversal chosen over a wrong one).
2. Reward model: configs/reward_tiny.py (value head on the SFT trunk, Bradley-Terry). Held-out pairwise accuracy on
   the pairs of the 300 test prompts (never trained on), per kind.
3. DPO: configs/dpo_tiny.py (beta 0.1, sigmoid loss, the SFT model as policy start and reference). Held-out
   preference accuracy and margin (the implicit reward beta * h on the test pairs) and exact match of greedy replies
   on the test prompts, before (= the SFT model) and after; the training curves (rewards of chosen and rejected,
   margin, accuracy) as results/dpo_curves.png.

Run: python experiments/align/run.py [--workdir runs/align] [--report]   (~15 min on a 2-core CPU after finetune)
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(HERE))

from study import last_json, llm_jax, main  # noqa: E402  (experiments/study.py)


def test_pairs(path: str):
    """[(kind, (prompt, chosen, rejected))] of a preference file, in order."""
    from llm_jax.data.sft import preference_triple
    records = [json.loads(line) for line in open(path)]
    return [(r.get("kind", "all"), preference_triple(r)) for r in records]


def _rows(loaded, workdir: str, pairs):
    from llm_jax.data.chat import load_chat_template
    from llm_jax.data.preferences import pair_rows
    return pair_rows([t for _, t in pairs], loaded.tokenizer, load_chat_template(workdir), loaded.cfg.model.seq_len)


def _batches(rows, size=16):
    for start in range(0, len(rows), size):
        items = [rows[i] for i in range(start, min(start + size, len(rows)))]
        n = len(items)
        items += [items[-1]] * (size - n)
        yield n, {k: np.stack([r[k] for r in items]) for k in items[0]}


def by_kind(kinds, correct, values=None) -> dict:
    out = {"all": {"accuracy": float(np.mean(correct)), "n": len(correct)}}
    for kind in sorted(set(kinds)):
        picked = [c for k, c in zip(kinds, correct) if k == kind]
        out[kind] = {"accuracy": float(np.mean(picked)), "n": len(picked)}
    if values is not None:
        out["all"]["margin"] = float(np.mean(values))
    return out


def reward_accuracy(workdir: str, pairs) -> dict:
    import jax
    from llm_jax.infer.load import load_workdir
    from llm_jax.objectives.reward import scores
    loaded = load_workdir(workdir)
    score = jax.jit(lambda p, b: scores(loaded.model, p, b)[:2])
    correct = []
    for n, batch in _batches(_rows(loaded, workdir, pairs)):
        r_c, r_r = jax.device_get(score(loaded.params, batch))
        correct += list((r_c > r_r)[:n])
    return by_kind([k for k, _ in pairs], correct)


def dpo_accuracy(policy_dir: str, reference_dir: str, pairs, beta: float) -> dict:
    """Held-out preference accuracy and margin beta * h of a policy against its reference."""
    import jax
    from llm_jax.infer.load import load_workdir
    from llm_jax.objectives.base import apply_with_aux
    from llm_jax.objectives.pairs import sequence_logps
    policy, reference = load_workdir(policy_dir), load_workdir(reference_dir)
    logps = jax.jit(lambda p, b: sequence_logps(policy.model, p, b, None, True, apply_with_aux)[:2])
    hs = []
    for n, batch in _batches(_rows(policy, policy_dir, pairs)):
        pc, pr = jax.device_get(logps(policy.params, batch))
        rc, rr = jax.device_get(logps(reference.params, batch))
        hs += list(((pc - rc) - (pr - rr))[:n])
    return by_kind([k for k, _ in pairs], [h > 0 for h in hs], [beta * h for h in hs])


def run(workdir: str, sft: str = os.path.join(REPO, "runs", "finetune", "full"),
        data: str = os.path.join(REPO, "runs", "finetune", "data")) -> dict:
    if not os.path.isdir(os.path.join(sft, "checkpoints")):
        raise SystemExit(f"{sft} is missing: run experiments/finetune/run.py first (its full SFT model)")
    pairs = test_pairs(os.path.join(data, "prefs_test.jsonl"))
    results = {"date": time.strftime("%Y-%m-%d"), "sft": os.path.relpath(sft, REPO)}
    sets = {"data.preferences": os.path.join(data, "prefs_train.jsonl"), "checkpoint.restore_from": sft}
    flags = [f"--config.{k}={v}" for k, v in sets.items()]
    rm = os.path.join(workdir, "reward")
    started = time.time()
    results["reward"] = {"train": last_json(llm_jax("train", "--config", "configs/reward_tiny.py", "--workdir", rm,
                                                    "--json", *flags)),
                         "wall_seconds": time.time() - started, "held_out": reward_accuracy(rm, pairs)}
    print(f"reward model: held-out pairwise accuracy {results['reward']['held_out']['all']['accuracy']:.3f}",
          flush=True)
    dpo = os.path.join(workdir, "dpo")
    started = time.time()
    train = last_json(llm_jax("train", "--config", "configs/dpo_tiny.py", "--workdir", dpo, "--json", *flags))
    test = os.path.join(data, "test.jsonl")
    results["dpo"] = {
        "train": train, "wall_seconds": time.time() - started, "beta": 0.1,
        "held_out": dpo_accuracy(dpo, sft, pairs, 0.1),
        "exact_match_before": last_json(llm_jax("eval", "instruct", "--workdir", sft, "--data", test, "--json")),
        "exact_match_after": last_json(llm_jax("eval", "instruct", "--workdir", dpo, "--data", test, "--json")),
        "curve": [json.loads(line) for line in open(os.path.join(dpo, "metrics.jsonl"))]}
    print(f"dpo: held-out preference accuracy {results['dpo']['held_out']['all']['accuracy']:.3f}, exact match "
          f"{results['dpo']['exact_match_before']['exact_match']:.3f} -> "
          f"{results['dpo']['exact_match_after']['exact_match']:.3f}", flush=True)
    return results


def report(results: dict) -> None:
    rm, dpo = results["reward"], results["dpo"]
    kinds = [k for k in rm["held_out"] if k != "all"]
    before, after = dpo["exact_match_before"], dpo["exact_match_after"]
    lines = ["# Reward model and DPO on rule-labelled preferences", "",
             f"Measured {results['date']} by `python experiments/align/run.py` on a 2-core CPU, from "
             f"`{results['sft']}` (experiments/finetune's full SFT of the tiny model). Pairs: "
             "`llm-jax data make-sft`'s prompts with the right answer chosen over a wrong one (a sum or count off "
             "by 1-3, the words unreversed or shuffled); held out: the pairs of 300 prompts never trained on.", "",
             "| | all | " + " | ".join(kinds) + " |", "|---" * (2 + len(kinds)) + "|",
             "| reward model: held-out pairwise accuracy | " + f"{rm['held_out']['all']['accuracy']:.3f} | "
             + " | ".join(f"{rm['held_out'][k]['accuracy']:.3f}" for k in kinds) + " |",
             "| DPO: held-out preference accuracy (h > 0) | " + f"{dpo['held_out']['all']['accuracy']:.3f} | "
             + " | ".join(f"{dpo['held_out'][k]['accuracy']:.3f}" for k in kinds) + " |",
             "| exact match of greedy replies, SFT model | " + f"{before['exact_match']:.3f} | "
             + " | ".join(f"{before['by_kind'][k]['exact_match']:.3f}" for k in kinds) + " |",
             "| exact match of greedy replies, after DPO | " + f"{after['exact_match']:.3f} | "
             + " | ".join(f"{after['by_kind'][k]['exact_match']:.3f}" for k in kinds) + " |", "",
             f"Reward model: configs/reward_tiny.py, {rm['wall_seconds'] / 60:.1f} min; validation-split loss "
             f"{rm['train']['eval_loss']:.3f} (chance ln 2 = 0.693). DPO: configs/dpo_tiny.py (beta 0.1), "
             f"{dpo['wall_seconds'] / 60:.1f} min; held-out mean margin beta*h {dpo['held_out']['all']['margin']:.3f}.",
             "", "![DPO curves](dpo_curves.png)", ""]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "README.md"), "w") as f:
        f.write("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    curve = [r for r in dpo["curve"] if "stats/margin" in r]
    held = [r for r in dpo["curve"] if "eval_margin" in r]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    steps = [r["step"] for r in curve]
    for key, label in (("stats/rewards_chosen", "reward of chosen"), ("stats/rewards_rejected", "reward of rejected"),
                       ("stats/margin", "margin")):
        axes[0].plot(steps, [r[key] for r in curve], label=label)
    axes[0].plot([r["step"] for r in held], [r["eval_margin"] for r in held], "k--", label="margin (validation)")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=8)
    axes[1].plot(steps, [r["stats/accuracy"] for r in curve], label="train batch")
    axes[1].plot([r["step"] for r in held], [r["eval_accuracy"] for r in held], "k--", label="validation")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("preference accuracy")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "dpo_curves.png"), dpi=120)


if __name__ == "__main__":
    main(__doc__, run, report, RESULTS, os.path.join("runs", "align"),
         [("--sft", os.path.join(REPO, "runs", "finetune", "full"), "the SFT model (experiments/finetune)"),
          ("--data", os.path.join(REPO, "runs", "finetune", "data"), "its make-sft data")])
