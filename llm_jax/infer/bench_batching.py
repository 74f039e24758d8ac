"""`llm-jax bench batching`: continuous batching against static batching on a mixed-length workload.

The workload is synthetic: `requests` prompts of random token ids with lengths drawn uniformly from
`prompt_range` and output budgets drawn uniformly from `output_range` (greedy, no stop token, so every request
produces exactly its budget and both schedulers do the same work). Every request arrives at time 0.

- static: requests in arrival order, `rows` at a time, each group through `decode.generate` (padded to its
  longest prompt, decoding until its longest budget is spent); a group starts when the previous one ends.
- continuous: the engine (`infer/engine.py`) with `rows` rows; a request takes a row as soon as one frees up.

Reported: throughput (new tokens / wall time), mean and p90 time to first token, mean request latency, for both,
and the ratios. Each scheduler first runs the whole workload once untimed (compiling every shape it meets), then
once timed.
"""

from __future__ import annotations

import time

import numpy as np

from llm_jax.errors import UserError
from llm_jax.infer.decode import generate
from llm_jax.infer.engine import Engine, Request


def workload(n: int, prompt_range: tuple[int, int], output_range: tuple[int, int], vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, vocab, int(rng.integers(prompt_range[0], prompt_range[1] + 1))).tolist()
               for _ in range(n)]
    budgets = [int(b) for b in rng.integers(output_range[0], output_range[1] + 1, n)]
    return prompts, budgets


def _summary(wall: float, ttfts: list[float], latencies: list[float], tokens: int) -> dict:
    return {"seconds": wall, "tokens_per_sec": tokens / wall, "mean_ttft_s": float(np.mean(ttfts)),
            "p90_ttft_s": float(np.percentile(ttfts, 90)), "mean_latency_s": float(np.mean(latencies))}


def run_static(model, params, context: int, prompts, budgets, rows: int) -> dict:
    start = time.perf_counter()
    ttfts, latencies, tokens = [], [], 0
    for i in range(0, len(prompts), rows):
        group_start = time.perf_counter() - start
        result = generate(model, params, prompts[i:i + rows], budgets[i:i + rows], context)
        ttfts += [group_start + result.ttft_s] * len(result.new_ids)
        latencies += [group_start + result.total_s] * len(result.new_ids)
        tokens += result.tokens
    return _summary(time.perf_counter() - start, ttfts, latencies, tokens)


def run_continuous(model, params, context: int, prompts, budgets, rows: int, max_len: int,
                   steps_per_sync: int) -> dict:
    engine = Engine(model, params, context, rows=rows, max_len=max_len, steps_per_sync=steps_per_sync)
    start = time.perf_counter()
    requests = [engine.submit(Request(p, b)) for p, b in zip(prompts, budgets)]
    engine.run_until_idle()
    wall = time.perf_counter() - start
    return _summary(wall, [r.first_token_at - start for r in requests],
                    [r.finished_at - start for r in requests], sum(len(r.new_ids) for r in requests))


def bench_batching(loaded, requests: int = 64, prompt_range=(16, 512), output_range=(8, 256), rows: int = 8,
                   steps_per_sync: int = 4, log=print) -> dict:
    m = loaded.cfg.model
    max_len = prompt_range[1] + output_range[1]
    if max_len > m.seq_len:
        raise UserError(f"the longest prompt plus the longest output ({max_len} tokens) exceeds the model's "
                        f"context of {m.seq_len} tokens; narrow --prompt-range / --output-range")
    if not (0 < prompt_range[0] <= prompt_range[1] and 0 < output_range[0] <= output_range[1]):
        raise UserError("--prompt-range and --output-range are LOW,HIGH with 0 < LOW <= HIGH")
    prompts, budgets = workload(requests, prompt_range, output_range, m.vocab_size)
    model, params = loaded.model, loaded.params
    out = {"requests": requests, "prompt_range": list(prompt_range), "output_range": list(output_range),
           "rows": rows, "steps_per_sync": steps_per_sync, "new_tokens": sum(budgets)}
    for name, run in (("static", lambda: run_static(model, params, m.seq_len, prompts, budgets, rows)),
                      ("continuous", lambda: run_continuous(model, params, m.seq_len, prompts, budgets, rows,
                                                            max_len, steps_per_sync))):
        log(f"{name}: warm-up pass (compiles every shape)...")
        run()
        log(f"{name}: timed pass...")
        out[name] = run()
        log(f"{name}: {out[name]['tokens_per_sec']:.1f} tokens/s, mean TTFT {out[name]['mean_ttft_s']:.2f} s")
    out["throughput_ratio"] = out["continuous"]["tokens_per_sec"] / out["static"]["tokens_per_sec"]
    out["mean_ttft_ratio"] = out["continuous"]["mean_ttft_s"] / out["static"]["mean_ttft_s"]
    return out
