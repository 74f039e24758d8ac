"""llm_jax vs MaxText on the same CPU training shape, back to back: tokens/s of each and their ratio, both as a
fraction of the float32 matmul ceiling llm_jax's bench measures in the same run.

The shape is `configs/bench_cpu.py`'s: d 384, 4 layers, 6 heads of 64, MLP 1536 (GELU), vocabulary 8192, batch
8 x 256, float32, synthetic tokens. MaxText (>= 0.2.5) needs Python >= 3.12, so it runs from its own environment:

    ~/.pyenv/versions/3.12.1/bin/python -m venv /tmp/mtenv && /tmp/mtenv/bin/pip install "maxtext[tpu]==0.2.5"
    python experiments/maxtext/compare.py --maxtext-python /tmp/mtenv/bin/python

Both run with the same host allocator settings: llm_jax tunes glibc malloc itself (llm_jax/allocator.py) and
MaxText gets the same settings as environment variables (neither, with LLM_JAX_MALLOC=system).
MaxText runs its own llama2-style block (RMSNorm, RoPE; here with a non-gated GELU MLP and remat_policy=minimal,
its nearest to no rematerialisation); both are scored with llm_jax's FLOPs per token for this shape, so the
fractions of the ceiling compare tokens/s directly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

from llm_jax import allocator

STEPS, SKIP = 30, 10  # MaxText steps run, and the first ones (compilation, warm-up) left out of its median

MAXTEXT_ARGS = ["hardware=cpu", "skip_jax_distributed_system=true", "dataset_type=synthetic",
                "per_device_batch_size=8", "max_target_length=256", f"steps={STEPS}", "base_emb_dim=384",
                "base_num_query_heads=6", "base_num_kv_heads=6", "head_dim=64", "base_mlp_dim=1536",
                "base_num_decoder_layers=4", "vocab_size=8192", "dtype=float32", "weight_dtype=float32",
                'mlp_activations=["gelu"]', "enable_checkpointing=false", "remat_policy=minimal",
                "enable_tensorboard=false", "log_period=1000"]


def run_llm_jax() -> dict:
    command = [sys.executable, "-m", "llm_jax", "bench", "train", "--config", "configs/bench_cpu.py", "--json"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def maxtext_env() -> dict:
    same = {} if os.environ.get(allocator.ENV) == "system" else allocator.ENV_VARS
    return dict(os.environ, JAX_PLATFORMS="cpu", **same)


def run_maxtext(python: str, workdir: str) -> list[float]:
    base = subprocess.run([python, "-c", "import maxtext, os; print(os.path.dirname(maxtext.__file__))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    out = subprocess.run([python, "-m", "maxtext.trainers.pre_train.train", os.path.join(base, "configs", "base.yml"),
                          "run_name=compare", f"base_output_directory={workdir}", *MAXTEXT_ARGS],
                         capture_output=True, text=True, env=maxtext_env())
    log = out.stderr + out.stdout
    rates = [float(x) for x in re.findall(r"completed step: \d+, .*?Tokens/s/device: ([0-9.]+)", log)]
    if len(rates) <= SKIP:
        sys.exit(f"MaxText produced {len(rates)} step lines; its output ends:\n{log[-2000:]}")
    return rates[SKIP:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maxtext-python", default=os.environ.get("MAXTEXT_PYTHON", ""),
                        help="the Python (>= 3.12) of an environment with maxtext installed")
    parser.add_argument("--workdir", default="runs/maxtext_compare")
    args = parser.parse_args()
    if not args.maxtext_python:
        sys.exit("--maxtext-python (or MAXTEXT_PYTHON): the Python of an environment with maxtext; see the docstring")
    ours = run_llm_jax()
    rates = run_maxtext(args.maxtext_python, os.path.abspath(args.workdir))
    theirs = statistics.median(rates)
    ceiling, fpt = ours["ceiling_flops_per_sec"], ours["flops_per_token"]
    result = {"llm_jax_tokens_per_sec": ours["tokens_per_sec"], "maxtext_tokens_per_sec": theirs,
              "speedup": ours["tokens_per_sec"] / theirs, "ceiling_flops_per_sec": ceiling,
              "llm_jax_ratio": ours["ratio"], "maxtext_ratio": theirs * fpt / ceiling,
              "maxtext_steps_timed": len(rates), "ceiling_spread": ours["ceiling_spread"],
              "host_malloc": ours["host_malloc"]}
    print(f"llm_jax {result['llm_jax_tokens_per_sec']:,.0f} tokens/s ({result['llm_jax_ratio']:.3f} of the ceiling) | "
          f"MaxText {theirs:,.0f} tokens/s ({result['maxtext_ratio']:.3f}; median of {len(rates)} steps) | "
          f"llm_jax / MaxText = {result['speedup']:.2f}x | host malloc (both) {ours['host_malloc']}")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
