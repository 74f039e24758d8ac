"""A student trained from the teacher versus the same student trained from scratch on the same tokens.

1. Teacher: runs/tiny (`make train`: configs/tiny.py, 3.7M parameters, 700 steps on Shakespeare); trained if absent.
2. Student: configs/tiny.py at 2 layers, d_model 128, 2 heads, on the teacher's tokenizer; STEPS steps of the same
   batches (same seed, 8 x 256 tokens) twice:
   - from scratch: train.objective=causal_lm;
   - distilled: train.objective=distill, online teacher, alpha 0.5, T 2, the teacher's top 32 tokens.
3. Held-out perplexity of teacher and both students on the same 64 validation windows of 256 tokens (next-token
   cross-entropy: what both students are finally judged by), and each student's training cross-entropy curve.

Run: python experiments/distill/run.py [--workdir runs/distill] [--report]   (~10 min on a 2-core CPU)
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

from study import held_out_windows, llm_jax, main, perplexity  # noqa: E402  (experiments/study.py)

STEPS = 400
STUDENT = {"model.n_layers": 2, "model.d_model": 128, "model.n_heads": 2, "train.steps": STEPS,
           "train.eval_every": 100, "checkpoint.every": 0}
STUDENTS = {"scratch": {"train.objective": "causal_lm"},
            "distilled": {"train.objective": "distill", "train.distill_alpha": 0.5, "train.distill_temperature": 2.0,
                          "train.distill_top_k": 32}}


def run(workdir: str) -> dict:
    teacher = os.path.join(REPO, "runs", "tiny")
    if not os.path.isdir(os.path.join(teacher, "checkpoints")):
        llm_jax("train", "--workdir", teacher)
    windows = held_out_windows(teacher, 64)
    results = {"date": time.strftime("%Y-%m-%d"), "teacher": "runs/tiny (configs/tiny.py, 700 steps)",
               "windows": len(windows), "steps": STEPS, "teacher_perplexity": perplexity(teacher, windows),
               "students": {}}
    tokenizer = os.path.join(teacher, "tokenizer.model")
    for name, sets in STUDENTS.items():
        out = os.path.join(workdir, name)
        flags = {**STUDENT, **sets, "data.tokenizer": tokenizer,
                 **({"train.teacher": teacher} if name == "distilled" else {})}
        started = time.time()
        llm_jax("train", "--config", "configs/tiny.py", "--workdir", out,
                *[f"--config.{k}={v}" for k, v in flags.items()])
        results["students"][name] = {
            "settings": flags, "wall_seconds": time.time() - started, "perplexity": perplexity(out, windows),
            "curve": [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]}
        print(f"{name}: held-out perplexity {results['students'][name]['perplexity']:.2f}", flush=True)
    return results


def report(results: dict) -> None:
    s = results["students"]
    lines = ["# Distillation: a student from the teacher versus from scratch", "",
             f"Measured {results['date']} by `python experiments/distill/run.py` on a 2-core CPU. Teacher: "
             f"{results['teacher']}. Student: 2 layers, d_model 128, 2 heads, {results['steps']} steps of the same "
             f"8 x 256-token batches either way. Held out: perplexity (next-token cross-entropy) on the same "
             f"{results['windows']} validation windows of 256 tokens.", "",
             "| model | held-out perplexity | wall time |", "|---|---|---|",
             f"| teacher | {results['teacher_perplexity']:.2f} | |"]
    for name in STUDENTS:
        lines.append(f"| student, {name} | {s[name]['perplexity']:.2f} | {s[name]['wall_seconds'] / 60:.1f} min |")
    gain = s["scratch"]["perplexity"] - s["distilled"]["perplexity"]
    lines += ["", f"Distillation changed the student's held-out perplexity by {-gain:+.2f} against training from "
              "scratch on the same tokens (alpha 0.5, T 2, the teacher's top 32 tokens, online).", "",
              "History: the first implementation renormalised the teacher's top k over those k tokens, which tells "
              "the student that every other token is impossible; run the same way (commit db43c40) its distilled "
              "student reached 225.2 against 101.4 from scratch — worse. The soft target now keeps the teacher's "
              "log-probabilities for its top k and the rest of the vocabulary as one more outcome.", "",
              "![training cross-entropy](curves.png)", ""]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "README.md"), "w") as f:
        f.write("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in STUDENTS:
        key = "stats/distill_ce" if name == "distilled" else "loss"  # the distilled loss mixes in the KL
        train = [r for r in s[name]["curve"] if key in r]
        ax.plot([r["step"] for r in train], [r[key] for r in train], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training next-token cross-entropy (nats)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "curves.png"), dpi=120)


if __name__ == "__main__":
    main(__doc__, run, report, RESULTS, os.path.join("runs", "distill"))
