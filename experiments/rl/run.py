"""GRPO with a rule reward and PPO against the learned reward model, from the fine-tuned tiny model; held-out numbers.

1. Start: experiments/finetune/run.py's full SFT model (runs/finetune/full, also the KL reference) and its data
   (runs/finetune/data: `make-sft`'s add / reverse / count tasks), and experiments/align/run.py's reward model
   (runs/align/reward: Bradley-Terry on rule-labelled pairs).
2. GRPO: configs/grpo_tiny.py — 8 replies to each of 4 prompts a step, reward 1 for the exact answer (else 0).
3. PPO: configs/ppo_tiny.py — one reply to each of 32 prompts a step, scored by the reward model (whitened), KL
   penalty 0.05 per token, GAE over a value head on the policy's trunk.
Each: the held-out reward (greedy replies to the validation split's prompts: the rule for GRPO, the reward
model's score for PPO) and KL to the reference over steps (results/rl_curves.png), and the held-out exact match of
greedy replies on the 300 test prompts before (= the SFT model) and after.

Run: python experiments/rl/run.py [--workdir runs/rl] [--report]   (~20 min on a 2-core CPU after finetune + align)
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(HERE))

from study import last_json, llm_jax, main  # noqa: E402  (experiments/study.py)

METHODS = (("grpo", "configs/grpo_tiny.py"), ("ppo", "configs/ppo_tiny.py"))


def run(workdir: str, sft: str = os.path.join(REPO, "runs", "finetune", "full"),
        data: str = os.path.join(REPO, "runs", "finetune", "data"),
        reward: str = os.path.join(REPO, "runs", "align", "reward")) -> dict:
    for path, how in ((sft, "experiments/finetune/run.py"), (reward, "experiments/align/run.py")):
        if not os.path.isdir(os.path.join(path, "checkpoints")):
            raise SystemExit(f"{path} is missing: run {how} first")
    test = os.path.join(data, "test.jsonl")
    results = {"date": time.strftime("%Y-%m-%d"), "sft": os.path.relpath(sft, REPO),
               "reward_model": os.path.relpath(reward, REPO),
               "exact_match_before": last_json(llm_jax("eval", "instruct", "--workdir", sft, "--data", test,
                                                       "--json"))}
    sets = {"data.sft": os.path.join(data, "train.jsonl"), "checkpoint.restore_from": sft}
    for name, config in METHODS:
        out = os.path.join(workdir, name)
        flags = {**sets, **({"train.reward_model": reward} if name == "ppo" else {})}
        started = time.time()
        train = last_json(llm_jax("train", "--config", config, "--workdir", out, "--json",
                                  *[f"--config.{k}={v}" for k, v in flags.items()]))
        results[name] = {"train": train, "wall_seconds": time.time() - started,
                         "exact_match_after": last_json(llm_jax("eval", "instruct", "--workdir", out, "--data", test,
                                                                "--json")),
                         "curve": [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]}
        print(f"{name}: exact match {results['exact_match_before']['exact_match']:.3f} -> "
              f"{results[name]['exact_match_after']['exact_match']:.3f}", flush=True)
    return results


def report(results: dict) -> None:
    before = results["exact_match_before"]
    kinds = sorted(before["by_kind"])
    row = lambda label, r: (f"| {label} | {r['exact_match']:.3f} ± {r['exact_match_stderr']:.3f} | "  # noqa: E731
                            + " | ".join(f"{r['by_kind'][k]['exact_match']:.3f}" for k in kinds) + " |")
    lines = ["# GRPO and PPO on checkable instruction tasks", "",
             f"Measured {results['date']} by `python experiments/rl/run.py` on a 2-core CPU, from "
             f"`{results['sft']}` (experiments/finetune's full SFT of the tiny model; also the KL reference). "
             "Held out: greedy replies to the 300 test prompts of `llm-jax data make-sft`, never trained on; a reply "
             "counts when it equals the answer.", "",
             "| model | exact match | " + " | ".join(kinds) + " |", "|---" * (2 + len(kinds)) + "|",
             row("SFT (start)", before)]
    for name, _ in METHODS:
        lines.append(row(f"after {name.upper()}", results[name]["exact_match_after"]))
    lines.append("")
    for name, _ in METHODS:
        after = results[name]["exact_match_after"]
        delta = after["exact_match"] - before["exact_match"]
        noise = 2 * max(after["exact_match_stderr"], before["exact_match_stderr"])
        lines.append(f"{name.upper()}: exact match {delta:+.3f} — "
                     + ("within two standard errors: no measurable change at this budget." if abs(delta) < noise
                        else "beyond two standard errors."))
    lines.append("")
    for name, config in METHODS:
        r = results[name]
        held = [c for c in r["curve"] if "eval_reward" in c]
        lines.append(f"- {name.upper()} ({config}, {r['wall_seconds'] / 60:.1f} min): held-out reward "
                     f"{held[0]['eval_reward']:.3f} -> {held[-1]['eval_reward']:.3f}, KL to the reference "
                     f"{held[-1]['eval_kl']:.4f} per reply token at the end"
                     + (" (the reward model's score of greedy replies to the validation split)" if name == "ppo"
                        else " (the exact-answer rule on greedy replies to the validation split)") + ".")
    lines += ["", "![held-out reward and KL over steps](rl_curves.png)", ""]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "README.md"), "w") as f:
        f.write("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, (name, _) in zip(axes[:2], METHODS):
        curve = results[name]["curve"]
        train = [c for c in curve if "stats/reward" in c]
        held = [c for c in curve if "eval_reward" in c]
        ax.plot([c["step"] for c in train], [c["stats/reward"] for c in train], label="rollouts (sampled)")
        ax.plot([c["step"] for c in held], [c["eval_reward"] for c in held], "k--o", label="held out (greedy)")
        ax.set_title(f"{name.upper()}: " + ("reward-model score" if name == "ppo" else "exact-answer reward"))
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        held_kl = [c for c in curve if "eval_kl" in c]
        axes[2].plot([c["step"] for c in held_kl], [c["eval_kl"] for c in held_kl], "-o", label=name.upper())
    axes[2].set_title("held-out KL to the reference (per token)")
    axes[2].set_xlabel("step")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "rl_curves.png"), dpi=120)


if __name__ == "__main__":
    main(__doc__, run, report, RESULTS, os.path.join("runs", "rl"),
         [("--sft", os.path.join(REPO, "runs", "finetune", "full"), "the SFT model (experiments/finetune)"),
          ("--data", os.path.join(REPO, "runs", "finetune", "data"), "its make-sft data"),
          ("--reward", os.path.join(REPO, "runs", "align", "reward"), "the reward model (experiments/align)")])
