"""`estimate`'s inference section: the guide's KV-cache example to the byte, weights at each precision, the
decode step as the slower of reading every byte and doing every FLOP, and the cost per million tokens."""

import json

from helpers import run_cli
from llm_jax.config import load_config
from llm_jax.infer.cost import inference_estimate
from llm_jax.models.accounting import param_count


def test_the_guides_llama_7b_kv_cache_example_is_1_gib_per_2048_token_sample():
    cfg = load_config("configs/llama_7b.py", {"model.n_kv_heads": "32"})
    out = inference_estimate(cfg.model, batch=1, context=2048)
    assert out["kv_cache_bytes"]["bfloat16"] == 2 * 32 * 32 * 128 * 2048 * 1 * 2 == 2**30
    assert out["kv_cache_bytes"]["int8"] == 2 * 32 * 32 * 2048 * (128 + 4)  # int8 codes + a float32 scale
    n = param_count(cfg.model)
    assert out["weights_bytes"] == {"float32": 4 * n, "bfloat16": 2 * n, "int8": n, "int4": n / 2}
    gqa = inference_estimate(load_config("configs/llama_7b.py").model, batch=1, context=2048)
    assert gqa["kv_cache_bytes"]["bfloat16"] == 2**30 / 4  # 8 K/V heads for 32 query heads


def test_decode_is_memory_bound_at_batch_1_and_compute_bound_at_a_large_batch_and_priced():
    cfg = load_config("configs/llama_7b.py")
    one = inference_estimate(cfg.model, 1, 2048, peak_flops=989e12, bandwidth=3.35e12, price_per_device_hour=2.0)
    read = one["weights_bytes"]["bfloat16"] + one["kv_cache_bytes"]["bfloat16"]
    assert one["decode_bound"] == "memory" and one["decode_step_s"] == read / 3.35e12
    assert one["cost_per_million_output_tokens"] == 2.0 / 3600 / (1 / one["decode_step_s"]) * 1e6
    big = inference_estimate(cfg.model, 4096, 128, peak_flops=989e12, bandwidth=3.35e12)
    assert big["decode_bound"] == "compute" and big["decode_tokens_per_sec"] > 100 * one["decode_tokens_per_sec"]


def test_estimate_prints_the_inference_section_for_a_topology():
    proc = run_cli("estimate", "--config", "configs/llama_7b.py", "--topology", "v5p-8", "--infer-batch", "8",
                   "--infer-context", "1024", "--infer-weights", "int8", "--price-per-device-hour", "4.2", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])["inference"]
    assert (out["batch"], out["context"], out["precision"]) == (8, 1024, {"weights": "int8", "kv_cache": "bfloat16"})
    assert out["decode_step_s"] == (out["weights_bytes"]["int8"] + out["kv_cache_bytes"]["bfloat16"]) / 2.765e12
