"""Full fine-tuning versus LoRA (ranks 4 / 16 / 64), QLoRA, prefix tuning and adapters on checkable instruction
tasks, from the default tiny model.

1. Base: runs/tiny (`make train`: configs/tiny.py, 700 steps on Shakespeare); trained here if absent.
2. Data: `llm-jax data make-sft` (addition, word reversal, word count; 3,000 training records per kind, 100
   held-out prompts per kind that no training record has).
3. Methods, each 300 steps of 8 x 256 packed tokens from the base's parameters: configs/sft_tiny.py (every
   parameter); configs/sft_lora_tiny.py at model.lora_rank = 4, 16, 64 (alpha = 2 x rank), QLoRA (rank 16 over
   the base quantized to NF4 by `llm-jax quantize`), and with model.peft = prefix (16 positions) and adapter
   (bottleneck 64) — the same learning rate as LoRA.
4. Held-out exact match (`llm-jax eval instruct`, greedy) of the base and of each method, per kind; trainable
   parameters, optimizer-state bytes and the median step time of each method. Writes results/README.md (table),
   results/results.json and results/exact_match.png.

Run: python experiments/finetune/run.py [--workdir runs/finetune] [--report]   (~35 min on a 2-core CPU)
(`--report`: rewrite README.md and the plot from results.json.)
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
NF4 = {"model.weight_quant": "nf4", "model.quant_group_size": 64}  # + restore_from the quantized base (run())
METHODS = {"full": ("sft_tiny.py", {}), "lora_r4": ("sft_lora_tiny.py", {"model.lora_rank": 4, "model.lora_alpha": 8}),
           "lora_r16": ("sft_lora_tiny.py", {"model.lora_rank": 16, "model.lora_alpha": 32}),
           "lora_r64": ("sft_lora_tiny.py", {"model.lora_rank": 64, "model.lora_alpha": 128}),
           "qlora_r16": ("sft_lora_tiny.py", {"model.lora_rank": 16, "model.lora_alpha": 32, **NF4}),
           "prefix_16": ("sft_lora_tiny.py", {"model.peft": "prefix", "model.prefix_len": 16}),
           "adapter_64": ("sft_lora_tiny.py", {"model.peft": "adapter", "model.adapter_dim": 64})}


def sizes(config: str, overrides: dict) -> dict:
    from llm_jax.config import load_config
    from llm_jax.train.trainable import build_trainable
    cfg = load_config(os.path.join(REPO, "configs", config), {k: str(v) for k, v in overrides.items()}, n_devices=1)
    return build_trainable(cfg).sizes()


def median_step_seconds(workdir: str, tokens_per_step: int) -> float:
    rates = [r["tokens_per_sec"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
             if "tokens_per_sec" in r]
    rates.sort()
    return tokens_per_step / rates[len(rates) // 2]


def run(workdir: str) -> dict:
    base, data = os.path.join(REPO, "runs", "tiny"), os.path.join(workdir, "data")
    if not os.path.isdir(os.path.join(base, "checkpoints")):
        llm_jax("train", "--workdir", base)
    if not os.path.isfile(os.path.join(data, "test.jsonl")):
        llm_jax("data", "make-sft", "--output", data)
    nf4 = os.path.join(workdir, "tiny_nf4")
    if not os.path.isdir(os.path.join(nf4, "checkpoints")):
        llm_jax("quantize", "--workdir", base, "--out", nf4, "--method", "nf4")
    test = os.path.join(data, "test.jsonl")
    results = {"date": time.strftime("%Y-%m-%d"), "base": "runs/tiny (configs/tiny.py, 700 steps)",
               "before": last_json(llm_jax("eval", "instruct", "--workdir", base, "--data", test, "--json")),
               "methods": {}}
    for name, (config, overrides) in METHODS.items():
        out = os.path.join(workdir, name)
        sets = {"data.sft": os.path.join(data, "train.jsonl"), **overrides,
                "checkpoint.restore_from": nf4 if "model.weight_quant" in overrides else base}
        started = time.time()
        summary = last_json(llm_jax("train", "--config", os.path.join("configs", config), "--workdir", out,
                                    "--json", *[f"--config.{k}={v}" for k, v in sets.items()]))
        wall = time.time() - started
        after = last_json(llm_jax("eval", "instruct", "--workdir", out, "--data", test, "--json"))
        results["methods"][name] = {"config": config, "overrides": overrides, "after": after,
                                    "eval_loss": summary["eval_loss"], "wall_seconds": wall,
                                    "step_seconds": median_step_seconds(out, 8 * 256), **sizes(config, sets)}
        print(f"{name}: exact match {results['before']['exact_match']:.3f} -> {after['exact_match']:.3f}",
              flush=True)
    return results


def report(results: dict) -> None:
    kinds = sorted(results["before"]["by_kind"])
    lines = ["# Full fine-tuning vs parameter-efficient methods on checkable instruction tasks", "",
             f"Measured {results['date']} by `python experiments/finetune/run.py` on a 2-core CPU: from "
             f"{results['base']}, 300 steps of 8 x 256 packed tokens per method on `llm-jax data make-sft`'s "
             "synthetic tasks (3,000 training records per kind); held-out exact match (`llm-jax eval instruct`, "
             "greedy) on 100 unseen prompts per kind.", "",
             "| method | exact match | " + " | ".join(kinds) + " | held-out loss | trainable params | "
             "optimizer state | step time |", "|---" * (6 + len(kinds)) + "|"]
    before = results["before"]
    lines.append(f"| base (no fine-tuning) | {before['exact_match']:.3f} | "
                 + " | ".join(f"{before['by_kind'][k]['exact_match']:.2f}" for k in kinds) + " | | | | |")
    for name, r in results["methods"].items():
        a = r["after"]
        lines.append(f"| {name} | {a['exact_match']:.3f} ± {a['exact_match_stderr']:.3f} | "
                     + " | ".join(f"{a['by_kind'][k]['exact_match']:.2f}" for k in kinds)
                     + f" | {r['eval_loss']:.3f} | {r['trainable']:,} ({100 * r['trainable'] / r['params']:.1f}%) "
                     f"| {r['optimizer_bytes'] / 2**20:.2f} MiB | {r['step_seconds']:.3f} s |")
    lines += ["", "Held-out loss: mean cross-entropy of the replies (and their EOS) of the validation split of the "
              "training file. Optimizer state: Adam's two moments of what trains. Step time: median over the run's "
              "logged intervals.", "", "![exact match](exact_match.png)", ""]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "README.md"), "w") as f:
        f.write("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = ["base"] + list(results["methods"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        values = [before["by_kind"][kind]["exact_match"]] + [
            r["after"]["by_kind"][kind]["exact_match"] for r in results["methods"].values()]
        ax.bar([x + i * width for x in range(len(names))], values, width, label=kind)
    ax.set_xticks([x + width * (len(kinds) - 1) / 2 for x in range(len(names))], names)
    ax.set_ylabel("held-out exact match")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "exact_match.png"), dpi=120)


if __name__ == "__main__":
    main(__doc__, run, report, RESULTS, os.path.join("runs", "finetune"))
