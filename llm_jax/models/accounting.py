"""Parameter and FLOP accounting from the config alone (the guide's Parameter Calculations and Compute Budget).

`param_count` is exact for this codebase's model (a test checks it against the initialised tree of every
shipped config); `flops_per_token` is the training cost used for MFU.
"""

from __future__ import annotations

from typing import Any


def _m(model_cfg) -> dict[str, Any]:
    return dict(model_cfg)


def layer_params(model_cfg) -> int:
    """One block: attention (Q, K, V, O), feed-forward, and two norms."""
    m = _m(model_cfg)
    d, H, K, hd, f = m["d_model"], m["n_heads"], m["n_kv_heads"], m["head_dim"], m["d_ff"]
    bias = m["use_bias"]
    attention = d * H * hd + 2 * d * K * hd + H * hd * d
    if bias:
        attention += H * hd + 2 * K * hd + d
    n_in = 2 if m["ffn"] == "swiglu" else 1
    ffn = n_in * d * f + f * d + ((n_in * f + d) if bias else 0)
    return attention + ffn + 2 * norm_params(m)


def norm_params(model_cfg) -> int:
    m = _m(model_cfg)
    return m["d_model"] * (2 if m["norm"] == "layernorm" and m["use_bias"] else 1)


def embedding_params(model_cfg) -> int:
    """Token embedding, the learned position table, and an untied output head."""
    m = _m(model_cfg)
    n = m["vocab_size"] * m["d_model"]
    if m["positions"] == "learned":
        n += m["seq_len"] * m["d_model"]
    if not m["tie_embeddings"]:
        n += m["d_model"] * m["vocab_size"]
    return n


def param_count(model_cfg) -> int:
    """Total = embeddings + N * layer + final norm (+ untied head), as in the guide's decoder-only formula."""
    m = _m(model_cfg)
    final_norm = norm_params(m) if m["norm_position"] == "pre" else 0
    return embedding_params(m) + m["n_layers"] * layer_params(m) + final_norm


def non_embedding_params(model_cfg) -> int:
    """Kaplan et al.'s N: everything but the token/position embeddings and an untied output matrix."""
    return param_count(model_cfg) - embedding_params(model_cfg)


def flops_per_token(model_cfg, seq_len: int | None = None) -> float:
    """Training FLOPs per token = 6 * (matmul parameters) + 12 * n_layers * seq_len * n_heads * head_dim.

    The first term is the guide's 6N: forward (2 FLOPs per weight) plus backward (twice that) over every
    weight a token is multiplied by — the non-embedding parameters plus the V x d output projection, tied or
    not (an embedding lookup costs no FLOPs). The second is attention's QK^T and AV matmuls (PaLM's
    convention: the full L x L score matrix, no causal discount).
    """
    m = _m(model_cfg)
    L = seq_len or m["seq_len"]
    matmul_params = non_embedding_params(m) + m["vocab_size"] * m["d_model"]
    attention = 12 * m["n_layers"] * L * m["n_heads"] * m["head_dim"]
    return 6.0 * matmul_params + attention


def summary(model_cfg) -> dict[str, float]:
    return {
        "params": param_count(model_cfg),
        "non_embedding_params": non_embedding_params(model_cfg),
        "embedding_params": embedding_params(model_cfg),
        "flops_per_token": flops_per_token(model_cfg),
    }


def training_flops(params: float, tokens: float) -> float:
    """The guide's compute budget C = 6 * N * D (forward 2ND + backward 4ND)."""
    return 6.0 * params * tokens


def training_steps(tokens: float, batch_size: int, seq_len: int) -> float:
    """The guide's Steps = Total_Tokens / (Batch_Size * Sequence_Length)."""
    return tokens / (batch_size * seq_len)


def device_hours(flops: float, peak_flops_per_s: float, mfu: float = 1.0) -> float:
    """The guide's GPU_Hours = FLOPs / (FLOP/s * 3600), at a utilisation `mfu` of the peak (1 = the guide's)."""
    return flops / (peak_flops_per_s * mfu * 3600.0)


def training_cost(hours: float, price_per_device_hour: float) -> float:
    """The guide's Cost = GPU_Hours * Cost_Per_Hour."""
    return hours * price_per_device_hour


def training_time_days(flops: float, devices: int, peak_flops_per_s: float, mfu: float) -> float:
    """Wall-clock days on `devices` chips at utilisation `mfu`."""
    return device_hours(flops, peak_flops_per_s, mfu) / devices / 24.0
