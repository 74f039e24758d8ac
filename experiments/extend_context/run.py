"""Context extension 256 -> 2,048 tokens: no scaling vs position interpolation vs YaRN, before and after 200 steps.

1. Corpora (written here): Shakespeare (whitespace-normalised pieces of a context's length) mixed with synthetic
   passkey documents (llm_jax/eval/passkey.py: a random 5-digit key in the test's repetitive filler, asked for at
   the end) — short ones for the base, long ones (up to ~2,000 tokens) for the extension; the last 12 scenes are
   held out for evaluation.
2. Base: configs/extend_context.py at model.seq_len=256, no RoPE scaling, 2,000 steps of 16 x 256 tokens.
3. Extensions: configs/extend_context.py (2,048 tokens, factor 8) from the base's parameters, 200 steps of
   2 x 2,048 tokens, for rope_scaling none / linear / yarn.
4. Evaluation on the held-out scenes, every variant before (the base's weights with that scaling) and after:
   next-token loss by position bucket over 2,048-token windows, and passkey accuracy (40 examples: 8 at each of
   the depths 0.1 .. 0.9) at 256 and 2,048 tokens. Writes results/README.md (table), results/results.json and
   results/loss_by_position.png.

Run: python experiments/extend_context/run.py [--workdir runs/extend_context] [--quick] [--report]
(`--quick`: 30 + 10 steps and 1 example per depth, into results_quick/: a smoke run, not the committed numbers;
`--report`: rewrite README.md and the plot from results.json.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import ml_collections
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from llm_jax.data.corpus import shakespeare_scenes  # noqa: E402
from llm_jax.eval import passkey  # noqa: E402
from llm_jax.eval.perplexity import loss_by_position  # noqa: E402
from llm_jax.infer.load import load_workdir  # noqa: E402
from llm_jax.models import build_model  # noqa: E402

CONFIG = os.path.join(REPO, "configs", "extend_context.py")
VARIANTS = {"none": "no scaling", "linear": "position interpolation (PI)", "yarn": "YaRN"}
EDGES = (0, 256, 512, 1024, 2048)
HELD_OUT = 12


def _chunks(text: str, chars: int) -> list[str]:
    words, out, cur, size = text.split(), [], [], 0
    for w in words:
        cur.append(w)
        size += len(w) + 1
        if size >= chars:
            out.append(" ".join(cur))
            cur, size = [], 0
    return out


def write_corpora(workdir: str) -> tuple[str, str, str]:
    """Short and long training corpora (JSONL) and the held-out text. Each mixes Shakespeare (whitespace
    normalised, in pieces of a context's length) with passkey documents whose filler is the test's own
    repetitive text, so the only surprise in them is the key: retrieval is what they teach."""
    scenes = shakespeare_scenes()
    train, held_out = "\n".join(scenes[:-HELD_OUT]), " ".join("\n".join(scenes[-HELD_OUT:]).split())
    paths = []
    for name, piece, n, chars in (("short", 700, 6_000, (100, 800)), ("long", 6_000, 1_000, (800, 7_000))):
        docs = _chunks(train, piece) + passkey.training_documents(passkey.FILLER, n, chars, seed=len(name))
        if name == "long":  # keep teaching the short task too
            docs += passkey.training_documents(passkey.FILLER, 2_000, (100, 800), seed=7)
        order = np.random.RandomState(0).permutation(len(docs))
        path = os.path.join(workdir, f"corpus_{name}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": docs[i]}) + "\n" for i in order)
        paths.append(path)
    return paths[0], paths[1], held_out


def train(workdir: str, *overrides: str) -> float:
    t0 = time.time()
    cmd = [sys.executable, "-m", "llm_jax", "train", "--config", CONFIG, "--workdir", workdir, *overrides]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return time.time() - t0


def evaluate(loaded, variant: str, held_out: str, per_depth: int) -> dict:
    """The loaded weights under the extension config's model with `variant` scaling at 2,048 tokens."""
    cfg = ml_collections.ConfigDict(loaded.cfg.to_dict())
    ext = ml_collections.ConfigDict(__import__("runpy").run_path(CONFIG)["get_config"]().to_dict())
    for key in ("seq_len", "rope_factor", "rope_original_len"):
        cfg.model[key] = ext.model[key]
    cfg.model.rope_scaling = variant
    model = build_model(cfg.model)
    ids = loaded.tokenizer.encode(held_out)
    out = {"loss": loss_by_position(model, loaded.params, ids, 2048, EDGES)}
    for length in (256, 2048):
        ex = passkey.examples(loaded.tokenizer, passkey.FILLER * 8, length, passkey.DEPTHS, per_depth, seed=length)
        out[f"passkey_{length}"] = float(passkey.retrieved(model, loaded.params, ex).mean())
    return out


def plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    buckets = [f"{lo}-{hi}" for lo, hi in zip(EDGES[:-1], EDGES[1:])]
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, variant in enumerate(VARIANTS):
        for stage, style in (("before", "--"), ("after", "-")):
            losses = [results[variant][stage]["loss"][b] for b in buckets]
            ax.plot(buckets, losses, style, marker="o", color=f"C{i}", label=f"{VARIANTS[variant]}, {stage}")
    ax.axvline(0.5, color="grey", lw=0.5)
    ax.set_xlabel("token position in a 2,048-token window (base trained at 256)")
    ax.set_ylabel("next-token loss (nats)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(REPO, "runs", "extend_context"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        return report(os.path.join(HERE, "results" if not args.quick else "results_quick"))
    os.makedirs(args.workdir, exist_ok=True)
    short, long, held_out = write_corpora(args.workdir)
    base_steps, ext_steps, per_depth = (30, 10, 1) if args.quick else (2000, 200, 8)
    base = os.path.join(args.workdir, "base")
    seconds = {"base": train(base, "--config.model.seq_len=256", "--config.model.rope_scaling=none",
                             f"--config.data.corpus={short}", f"--config.train.steps={base_steps}",
                             "--config.train.batch_size=16", "--config.train.lr=3e-3", "--config.train.lr_min=3e-4",
                             f"--config.train.warmup_steps={base_steps // 20}", "--config.train.eval_every=400",
                             "--config.checkpoint.every=400")}
    for variant in VARIANTS:
        seconds[variant] = train(os.path.join(args.workdir, variant), f"--config.model.rope_scaling={variant}",
                                 f"--config.checkpoint.restore_from={base}", f"--config.data.corpus={long}",
                                 f"--config.data.tokenizer={os.path.join(base, 'tokenizer.model')}",
                                 f"--config.train.steps={ext_steps}", f"--config.train.warmup_steps={ext_steps // 10}")
    before = load_workdir(base)
    results = {}
    for variant in VARIANTS:
        results[variant] = {"before": evaluate(before, variant, held_out, per_depth),
                            "after": evaluate(load_workdir(os.path.join(args.workdir, variant)), variant, held_out,
                                              per_depth)}
        print(variant, json.dumps(results[variant]), flush=True)
    out_dir = os.path.join(HERE, "results" if not args.quick else "results_quick")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"results": results, "train_seconds": seconds, "ext_steps": ext_steps,
                   "date": time.strftime("%Y-%m-%d")}, f, indent=1)
    report(out_dir)


def report(out_dir: str) -> None:
    with open(os.path.join(out_dir, "results.json")) as f:
        saved = json.load(f)
    results, seconds, ext_steps = saved["results"], saved["train_seconds"], saved["ext_steps"]
    plot(results, os.path.join(out_dir, "loss_by_position.png"))
    buckets = [f"{lo}-{hi}" for lo, hi in zip(EDGES[:-1], EDGES[1:])]
    lines = ["| RoPE scaling | weights | " + " | ".join(f"loss {b}" for b in buckets) +
             " | passkey @256 | passkey @2048 |", "|---|---|" + "---|" * (len(buckets) + 2)]
    for variant, name in VARIANTS.items():
        for stage in ("before", "after"):
            r = results[variant][stage]
            what = "base (256)" if stage == "before" else f"+{ext_steps} steps at 2,048"
            lines.append(f"| {name} | {what} | " + " | ".join(f"{r['loss'][b]:.3f}" for b in buckets) +
                         f" | {r['passkey_256']:.2f} | {r['passkey_2048']:.2f} |")
    table = "\n".join(lines)
    minutes = sum(seconds.values()) / 60
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(f"# Context extension 256 -> 2,048 tokens: no scaling vs PI vs YaRN\n\n"
                f"`python experiments/extend_context/run.py` ({saved['date']}, 2-core CPU, {minutes:.0f} min of "
                f"training: {json.dumps({k: round(v) for k, v in seconds.items()})} s). What each stage does: the "
                f"script's docstring; the model and extension settings: configs/extend_context.py.\n\n"
                f"Next-token loss (nats) by position in 2,048-token windows of held-out Shakespeare, and passkey "
                f"retrieval accuracy (greedy, 40 examples per length) at 256 and 2,048 tokens:\n\n{table}\n\n"
                f"![loss by position](loss_by_position.png)\n")
    print(table)


if __name__ == "__main__":
    main()
