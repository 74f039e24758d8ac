"""Hugging Face T5 (T5ForConditionalGeneration) <-> the llm_jax encoder-decoder (models/encdec.py).

As in hf.py, one table of (our parameter path, HF tensor name, HF layout, input axes) drives both directions.
Two differences of convention are folded into the weights, exactly invertible:
- T5 does not scale attention scores by 1/sqrt(d_kv) (its init absorbs it); ours does, so the query kernels are
  multiplied by sqrt(d_kv) on import and divided on export.
- A tied T5 head multiplies the decoder output by d_model^-0.5 before the shared embedding; the decoder's final
  RMSNorm gain is multiplied by it on import (divided on export).
transformers 5 always ties T5's head to the shared embedding (`scale_decoder_outputs` = the config's
`tie_word_embeddings`), so export needs `model.tie_embeddings=True`; import also reads an untied `lm_head.weight`.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from llm_jax.fileio import atomic_write_json
from llm_jax.interop import safetensors_io
from llm_jax.interop.hf import (ConversionError, _check_tensor, _field, _get, _hf_shape, _set, _to_hf, _to_ours,
                                converted_config, param_shapes, read_hf_config, read_hf_tensors)


def t5_table(gated: bool) -> list[tuple]:
    """(our path, HF name with {i} = layer, layout, input axes) of a T5 with a gated or plain feed-forward."""
    ffn = [("layers/mlp/wi_gate/kernel", "DenseReluDense.wi_0.weight"), ("layers/mlp/wi_up/kernel",
                                                                         "DenseReluDense.wi_1.weight")] \
        if gated else [("layers/mlp/wi/kernel", "DenseReluDense.wi.weight")]
    ffn.append(("layers/mlp/wo/kernel", "DenseReluDense.wo.weight"))
    rows = [("embed/embedding", "shared.weight", "table", 0), ("head/kernel", "lm_head.weight", "linear", 1)]
    for stack, subs in (("encoder", ("SelfAttention",)), ("decoder", ("SelfAttention", "EncDecAttention"))):
        rows += [(f"{stack}/relative_bias", f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                  "table", 0), (f"{stack}/norm_final/scale", f"{stack}.final_layer_norm.weight", "vector", 0)]
        for j, sub in enumerate(subs):
            ours, norm = ("attention", "norm_attention") if sub == "SelfAttention" else ("cross", "norm_cross")
            rows += [(f"{stack}/layers/{ours}/{w}/kernel", f"{stack}.block.{{i}}.layer.{j}.{sub}.{w[0]}.weight",
                      "linear", 2 if w == "out" else 1) for w in ("query", "key", "value", "out")]
            rows.append((f"{stack}/layers/{norm}/scale", f"{stack}.block.{{i}}.layer.{j}.layer_norm.weight",
                         "vector", 0))
        f = len(subs)
        rows += [(f"{stack}/{p}", f"{stack}.block.{{i}}.layer.{f}.{n}", "linear", 1) for p, n in ffn]
        rows.append((f"{stack}/layers/norm_mlp/scale", f"{stack}.block.{{i}}.layer.{f}.layer_norm.weight", "vector", 0))
    return rows


ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gated-gelu": "geglu",
               "gated-gelu_new": "geglu"}


def model_fields_from_hf(hf: dict, tensors: dict, source: str = "config.json") -> dict:
    if hf.get("model_type") != "t5":
        raise ConversionError(f"{source}: model_type={hf.get('model_type')!r} is not t5")
    get = lambda key, *a, **k: _field(hf, key, source, *a, **k)  # noqa: E731
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in ACTIVATIONS:
        raise ConversionError(f"{source}: feed_forward_proj={proj!r} is not supported ({', '.join(ACTIVATIONS)})")
    layers = get("num_layers")
    if get("num_decoder_layers", default=layers) != layers:
        raise ConversionError(f"{source}: num_decoder_layers differs from num_layers; this encoder-decoder has "
                              f"equal stacks")
    untied = "lm_head.weight" in tensors and not np.array_equal(tensors["lm_head.weight"], tensors.get("shared.weight"))
    heads = get("num_heads")
    return dict(family="encdec", vocab_size=get("vocab_size"), seq_len=512, d_model=get("d_model"), n_layers=layers,
                n_heads=heads, n_kv_heads=heads, head_dim=get("d_kv"), d_ff=get("d_ff"), positions="relative",
                rel_buckets=get("relative_attention_num_buckets", default=32),
                rel_max_distance=get("relative_attention_max_distance", default=128), norm="rmsnorm",
                norm_eps=float(get("layer_norm_epsilon", "float", 1e-6)), norm_position="pre",
                ffn=ACTIVATIONS[proj], tie_embeddings=not untied, use_bias=False,
                dropout=float(get("dropout_rate", "float", 0.1)), init_std=1.0 / math.sqrt(get("d_model")))


def _names(name: str, n_layers: int) -> list[str]:
    return [name.format(i=i) for i in range(n_layers)] if "{i}" in name else [name]


def _fold(path: str, m: dict) -> float:
    """The factor ours = HF x factor for the tensor at `path` (see the module docstring)."""
    if path.endswith("/query/kernel"):  # self- and cross-attention
        return math.sqrt(m["head_dim"])
    if path == "decoder/norm_final/scale" and m["tie_embeddings"]:
        return m["d_model"] ** -0.5
    return 1.0


def hf_to_params(tensors: dict, m, source: str = "the checkpoint") -> dict:
    m = dict(m)
    tied_copies = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")  # = shared.weight
    tensors = {k: v for k, v in tensors.items() if k not in tied_copies}
    shapes = param_shapes(m)
    params, used = {}, set()
    for path, name, layout, n_in in t5_table(m["ffn"] == "geglu"):
        try:
            shape, dtype = _get(shapes, path)
        except KeyError:
            continue  # the head of a tied model
        names = _names(name, m["n_layers"])
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ConversionError(f"{source} has no tensor {missing[0]!r} (needed for {path})")
        per_layer = shape[1:] if "{i}" in name else shape
        for n in names:
            _check_tensor(n, tensors[n], _hf_shape(layout, per_layer, n_in), source)
        arrays = [_to_ours(np.asarray(tensors[n], np.float32), layout, per_layer) for n in names]
        value = np.stack(arrays) if "{i}" in name else arrays[0]
        _set(params, path, (value * _fold(path, m)).astype(dtype))
        used.update(names)
    unused = sorted(set(tensors) - used - {"lm_head.weight"})
    if unused:
        raise ConversionError(f"{source} has tensors this encoder-decoder does not use: {unused[:5]}")
    return params


def params_to_hf(params: dict, m) -> dict:
    m = dict(m)
    if m["family"] != "encdec" or m["positions"] != "relative" or m["norm"] != "rmsnorm" or m["use_bias"] \
            or m["norm_position"] != "pre" or not m["tie_embeddings"] or m["ffn"] not in ("relu", "geglu", "gelu",
                                                                                          "gelu_tanh") \
            or m["n_kv_heads"] != m["n_heads"]:
        raise ConversionError("this model has no Hugging Face T5 equivalent: T5 needs model.family='encdec', "
                              "relative positions, pre-LN RMSNorm without biases, a tied head, multi-head attention "
                              "and a relu / gelu / geglu feed-forward")
    tensors = {}
    for path, name, layout, n_in in t5_table(m["ffn"] == "geglu"):
        try:
            value = np.asarray(_get(params, path), dtype=np.float32) / _fold(path, m)
        except KeyError:
            continue
        for i, n in enumerate(_names(name, m["n_layers"])):
            tensors[n] = _to_hf(value[i] if "{i}" in name else value, layout, n_in)
    return tensors


def hf_config(m) -> dict:
    m = dict(m)
    proj = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "geglu": "gated-gelu"}[m["ffn"]]
    return {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "vocab_size": m["vocab_size"],
            "d_model": m["d_model"], "d_kv": m["head_dim"], "d_ff": m["d_ff"], "num_layers": m["n_layers"],
            "num_decoder_layers": m["n_layers"], "num_heads": m["n_heads"],
            "relative_attention_num_buckets": m["rel_buckets"],
            "relative_attention_max_distance": m["rel_max_distance"], "dropout_rate": m["dropout"],
            "layer_norm_epsilon": m["norm_eps"], "feed_forward_proj": proj, "is_encoder_decoder": True,
            "tie_word_embeddings": True, "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
            "torch_dtype": "float32"}


def load_hf_t5(hf_dir: str):
    """(resolved config, numpy params) of a Hugging Face T5 directory."""
    config_path, hf = read_hf_config(hf_dir)
    tensors = read_hf_tensors(hf_dir)
    cfg = converted_config(model_fields_from_hf(hf, tensors, config_path), "hf-t5", "span_corruption", config_path)
    return cfg, hf_to_params(tensors, cfg.model, source=hf_dir)


def save_hf_t5(model_cfg, params: dict, out: str) -> None:
    """model.safetensors + config.json (last) of our encoder-decoder in `out`, loadable by transformers."""
    tensors = params_to_hf(jax.device_get(params), model_cfg)
    os.makedirs(out, exist_ok=True)
    safetensors_io.write_file(os.path.join(out, "model.safetensors"), tensors)
    atomic_write_json(os.path.join(out, "config.json"), hf_config(model_cfg), indent=2)
