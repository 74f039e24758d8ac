"""Inference memory and cost of a model config, without running it (`llm-jax estimate`'s `inference` section).

Memory: the weights at each precision (parameters x bytes per weight: float32 4, bfloat16 2, int8 1, int4 0.5;
quantization scales add about 1-6 % and are not counted) and the guide's KV cache,
2 x layers x kv_heads x head_dim x context x batch x bytes (K/V heads, not query heads: GQA/MQA shrink it), in
the compute dtype and in int8 (plus one float32 scale per position and head, as `model.kv_cache_dtype=int8`
stores it).

Time and cost, with a chip's peak FLOP/s and HBM bandwidth: a decode step reads every weight and the whole cache
once and does 2 FLOPs per active weight per sequence, so it takes max(bytes / bandwidth, FLOPs / peak) (a lower
bound: real kernels reach perhaps 60-80 % of either); prefill is compute-bound, 2 x active parameters x prompt
tokens / peak. Cost per million output tokens = price per device-hour / 3600 / (tokens/s) x 1e6.
"""

from __future__ import annotations

from llm_jax.models.accounting import active_params, embedding_params, param_count

WEIGHT_BYTES = {"float32": 4.0, "bfloat16": 2.0, "int8": 1.0, "int4": 0.5}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def kv_cache_bytes(m, batch: int, context: int, dtype: str) -> float:
    """The guide's KV_Cache = 2 x Layers x KV_Heads x Head_Dim x Seq_Len x Batch x Bytes (+ int8's scales)."""
    entries = 2 * m.n_layers * m.n_kv_heads * context * batch
    if dtype == "int8":
        return entries * (m.head_dim + 4)
    return entries * m.head_dim * DTYPE_BYTES[dtype]


def inference_estimate(m, batch: int, context: int, peak_flops: float | None = None,
                       bandwidth: float | None = None, price_per_device_hour: float | None = None,
                       weights: str = "bfloat16", cache: str = "bfloat16") -> dict:
    """Memory for serving `batch` sequences of `context` tokens; with a chip's peak and bandwidth, the decode
    step time, tokens/s and (with a price) the cost per million output tokens, for `weights` / `cache` precisions."""
    n = param_count(m)
    out = {"batch": batch, "context": context,
           "weights_bytes": {name: n * b for name, b in WEIGHT_BYTES.items()},
           "kv_cache_bytes": {name: kv_cache_bytes(m, batch, context, name) for name in ("bfloat16", "float32",
                                                                                         "int8")}}
    out["kv_cache_bytes_per_token"] = out["kv_cache_bytes"][cache] / (batch * context)
    if peak_flops and bandwidth:
        matmul = active_params(m) - embedding_params(m) + m.vocab_size * m.d_model  # what a token multiplies by
        read = out["weights_bytes"][weights] + out["kv_cache_bytes"][cache]
        memory_s, compute_s = read / bandwidth, 2 * matmul * batch / peak_flops
        step = max(memory_s, compute_s)
        out.update({"precision": {"weights": weights, "kv_cache": cache}, "decode_step_s": step,
                    "decode_bound": "memory" if memory_s >= compute_s else "compute",
                    "decode_tokens_per_sec": batch / step, "prefill_s_per_sequence": 2 * matmul * context / peak_flops})
        if price_per_device_hour is not None:
            out["cost_per_million_output_tokens"] = price_per_device_hour / 3600 / out["decode_tokens_per_sec"] * 1e6
    return out
