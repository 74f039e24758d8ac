"""Parameter and FLOP accounting from the config alone (the guide's Parameter Calculations and Compute Budget).

`param_count` is exact for this codebase's model (a test checks it against the initialised tree of every
shipped config); `flops_per_token` is the training cost used for MFU.
"""

from __future__ import annotations

import re
from typing import Any

from llm_jax.models.layers import GATED


def _m(model_cfg) -> dict[str, Any]:
    return dict(model_cfg)


def attention_params(m) -> int:
    d, H, K, hd = m["d_model"], m["n_heads"], m["n_kv_heads"], m["head_dim"]
    n = d * H * hd + 2 * d * K * hd + H * hd * d
    return n + (H * hd + 2 * K * hd + d if m["use_bias"] else 0)


def ffn_params(m, width: int, bias: bool) -> int:
    n_in = 2 if m["ffn"] in GATED else 1
    return n_in * m["d_model"] * width + width * m["d_model"] + ((n_in * width + m["d_model"]) if bias else 0)


def moe_params(m, active: bool = False) -> int:
    """One MoE feed-forward layer: router, the experts (only top_k of them when `active`), shared experts."""
    width = m["moe_d_ff"] or m["d_ff"]
    experts = m["moe_top_k"] if active else m["moe_experts"]
    shared = ffn_params(m, width * m["moe_shared_experts"], False) if m["moe_shared_experts"] else 0
    return m["d_model"] * m["moe_experts"] + experts * ffn_params(m, width, False) + shared


def moe_layers(m) -> int:
    return m["n_layers"] // m["moe_every"] if m["moe_experts"] else 0


def layer_params(model_cfg, moe: bool = False, active: bool = False) -> int:
    """One block: attention (Q, K, V, O), feed-forward (dense, or MoE: all experts / the active ones), two norms."""
    m = _m(model_cfg)
    ffn = moe_params(m, active) if moe else ffn_params(m, m["d_ff"], m["use_bias"])
    return attention_params(m) + ffn + 2 * norm_params(m)


def norm_params(model_cfg) -> int:
    m = _m(model_cfg)
    return m["d_model"] * (2 if m["norm"] == "layernorm" and m["use_bias"] else 1)


def embedding_params(model_cfg) -> int:
    """Token embedding, the position tables (learned, or T5's relative bias; one per stack of an encoder-decoder),
    and an untied output head."""
    m = _m(model_cfg)
    n = m["vocab_size"] * m["d_model"]
    stacks = 2 if m["family"] == "encdec" else 1
    if m["positions"] == "learned":
        n += stacks * m["seq_len"] * m["d_model"]
    if m["positions"] == "relative":
        n += stacks * m["rel_buckets"] * m["n_heads"]
    if not m["tie_embeddings"]:
        n += m["d_model"] * m["vocab_size"]
    return n


def encoder_extra_params(model_cfg) -> int:
    """What an encoder (models/encoder.py) has beyond the decoder's formula: token-type table, embedding norm,
    pooler, MLM head (transform, norm, output bias; its output matrix is the decoder's tied/untied head) and
    the classifier. 0 for a decoder."""
    m = _m(model_cfg)
    if m["family"] != "encoder":
        return 0
    d, bias = m["d_model"], m["use_bias"]
    dense = lambda n_out: d * n_out + (n_out if bias else 0)
    mlm_head = dense(d) + norm_params(m) + (m["vocab_size"] if bias else 0)
    classifier = dense(m["num_labels"]) if m["num_labels"] else 0
    return m["type_vocab_size"] * d + norm_params(m) + dense(d) + mlm_head + classifier


def encdec_extra_params(model_cfg) -> int:
    """What an encoder-decoder (models/encdec.py) has beyond one decoder stack: the encoder stack (N blocks and
    its final norm) and each decoder block's cross-attention with its norm. 0 for other families."""
    m = _m(model_cfg)
    if m["family"] != "encdec":
        return 0
    final_norm = norm_params(m) if m["norm_position"] == "pre" else 0
    return m["n_layers"] * (layer_params(m) + attention_params(m) + norm_params(m)) + final_norm


def vision_params(model_cfg) -> int:
    """What the vlm family (models/vlm.py) adds to its decoder: the ViT's patch embedding, position table,
    model.vision_layers blocks and final norm, and the projector. 0 for other families."""
    m = _m(model_cfg)
    if m["family"] != "vlm":
        return 0
    d, bias = m["d_model"], m["use_bias"]
    dense = lambda n_in, n_out: n_in * n_out + (n_out if bias else 0)  # noqa: E731
    n_patches = (m["image_size"] // m["patch_size"]) ** 2
    projector = dense(d, d) * (2 if m["projector"] == "mlp" else 1)
    return (dense(3 * m["patch_size"] ** 2, d) + n_patches * d + m["vision_layers"] * layer_params(m)
            + norm_params(m) + projector)


def peft_params(model_cfg) -> int:
    """The parameters model.peft adds to one block: LoRA's r x (inputs + outputs) per targeted projection (module
    paths as in a one-block layer, `layers/attention/query`), prefix tuning's keys and values, or two adapters."""
    m = _m(model_cfg)
    d, H, K, hd, F = m["d_model"], m["n_heads"], m["n_kv_heads"], m["head_dim"], m["d_ff"]
    if m["peft"] == "prefix":
        return 2 * m["prefix_len"] * K * hd
    if m["peft"] == "adapter":
        return 2 * 2 * d * m["adapter_dim"]
    if m["peft"] != "lora":
        return 0
    mlp = {"wi_gate": (d, F), "wi_up": (d, F)} if m["ffn"] in GATED else {"wi": (d, F)}
    shapes = {"attention/query": (d, H * hd), "attention/key": (d, K * hd), "attention/value": (d, K * hd),
              "attention/out": (H * hd, d), **{f"mlp/{k}": v for k, v in mlp.items()}, "mlp/wo": (F, d)}
    return sum(m["lora_rank"] * (i + o) for name, (i, o) in shapes.items()
               if re.search(m["lora_targets"], f"layers/{name}"))


def param_count(model_cfg, active: bool = False) -> int:
    """Total = embeddings + N * layer + final norm (+ untied head), as in the guide's decoder-only formula; an MoE
    layer counts all its experts, or with `active` only the top_k a token goes through (plus router and shared);
    plus what model.peft adds."""
    m = _m(model_cfg)
    final_norm = norm_params(m) if m["norm_position"] == "pre" else 0
    n_moe = moe_layers(m)
    layers = (m["n_layers"] - n_moe) * layer_params(m) + n_moe * layer_params(m, moe=True, active=active)
    return (embedding_params(m) + layers + final_norm + encoder_extra_params(m) + encdec_extra_params(m)
            + vision_params(m)
            + m["n_layers"] * peft_params(m) + (m["d_model"] + 1 if m.get("value_head") else 0)
            + (m["n_layers"] * (attention_params(m) + ffn_params(m, m["d_ff"], False)
                                - ((m["n_heads"] + 2 * m["n_kv_heads"]) * m["head_dim"] + m["d_model"]
                                   if m["use_bias"] else 0)) if m.get("prune_masks") else 0))


def active_params(model_cfg) -> int:
    """The parameters one token is multiplied by (= param_count for a dense model)."""
    return param_count(model_cfg, active=True)


def non_embedding_params(model_cfg) -> int:
    """Kaplan et al.'s N: everything but the token/position embeddings and an untied output matrix."""
    return param_count(model_cfg) - embedding_params(model_cfg)


def flops_per_token(model_cfg, seq_len: int | None = None) -> float:
    """Training FLOPs per token = 6 * (active matmul parameters) + 12 * n_layers * seq_len * n_heads * head_dim.

    The first term is the guide's 6N: forward (2 FLOPs per weight) plus backward (twice that) over every
    weight a token is multiplied by — the non-embedding parameters plus the V x d output projection, tied or
    not (an embedding lookup costs no FLOPs); an MoE layer counts the router and the top_k experts a token
    visits (capacity padding and dropped tokens are ignored). The second is attention's QK^T and AV matmuls (PaLM's
    convention: the full L x L score matrix, no causal discount).
    """
    m = _m(model_cfg)
    L = seq_len or m["seq_len"]
    matmul_params = active_params(m) - embedding_params(m) + m["vocab_size"] * m["d_model"]
    attention = 12 * m["n_layers"] * L * m["n_heads"] * m["head_dim"]
    return 6.0 * matmul_params + attention


def summary(model_cfg) -> dict[str, float]:
    return {
        "params": param_count(model_cfg),
        "active_params": active_params(model_cfg),
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
