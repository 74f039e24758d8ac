"""Hugging Face BERT (BertModel, BertForMaskedLM, BertForSequenceClassification) <-> the llm_jax encoder.

As in hf.py, one table of (our parameter path, HF tensor name, HF layout, input axes) drives both directions,
and the tensor helpers are hf.py's. The task models keep the encoder under `bert.` and their heads at the top
(`cls.predictions.*`, `classifier.*`); a bare BertModel has no prefix. Import accepts either and fills the
parts a checkpoint lacks (BertForMaskedLM has no pooler, BertModel no MLM head) from a fresh initialisation,
saying which; export writes the task-model names, pooler and MLM head included.

`load_hf_bert(dir)` reads a `save_pretrained` directory (config.json + *.safetensors) into (config, params);
`save_hf_bert(cfg, params, out)` writes one that `BertForMaskedLM.from_pretrained` loads. Not yet wired into
`llm-jax convert` (whose work directories also carry a tokenizer).
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import numpy as np

from llm_jax.fileio import atomic_write_json
from llm_jax.interop import safetensors_io
from llm_jax.interop.hf import (ConversionError, _check_tensor, _field, _get, _hf_shape, _set, _to_hf, _to_ours,
                                converted_config, read_hf_config, read_hf_tensors)
from llm_jax.models import build_model

ENCODER = "bert.encoder.layer.{i}."
BERT_TABLE = [
    ("embed/embedding", "bert.embeddings.word_embeddings.weight", "table", 0),
    ("pos_embed", "bert.embeddings.position_embeddings.weight", "table", 0),
    ("type_embed", "bert.embeddings.token_type_embeddings.weight", "table", 0),
    ("norm_embed/scale", "bert.embeddings.LayerNorm.weight", "vector", 0),
    ("norm_embed/bias", "bert.embeddings.LayerNorm.bias", "vector", 0),
    *[(f"layers/attention/{ours}/{kind}", f"{ENCODER}attention.self.{ours}.{hf}", layout, n_in)
      for ours in ("query", "key", "value")
      for kind, hf, layout, n_in in (("kernel", "weight", "linear", 1), ("bias", "bias", "vector", 0))],
    ("layers/attention/out/kernel", ENCODER + "attention.output.dense.weight", "linear", 2),
    ("layers/attention/out/bias", ENCODER + "attention.output.dense.bias", "vector", 0),
    ("layers/norm_attention/scale", ENCODER + "attention.output.LayerNorm.weight", "vector", 0),
    ("layers/norm_attention/bias", ENCODER + "attention.output.LayerNorm.bias", "vector", 0),
    ("layers/mlp/wi/kernel", ENCODER + "intermediate.dense.weight", "linear", 1),
    ("layers/mlp/wi/bias", ENCODER + "intermediate.dense.bias", "vector", 0),
    ("layers/mlp/wo/kernel", ENCODER + "output.dense.weight", "linear", 1),
    ("layers/mlp/wo/bias", ENCODER + "output.dense.bias", "vector", 0),
    ("layers/norm_mlp/scale", ENCODER + "output.LayerNorm.weight", "vector", 0),
    ("layers/norm_mlp/bias", ENCODER + "output.LayerNorm.bias", "vector", 0),
    ("pooler/kernel", "bert.pooler.dense.weight", "linear", 1),
    ("pooler/bias", "bert.pooler.dense.bias", "vector", 0),
    ("mlm/transform/kernel", "cls.predictions.transform.dense.weight", "linear", 1),
    ("mlm/transform/bias", "cls.predictions.transform.dense.bias", "vector", 0),
    ("mlm/norm/scale", "cls.predictions.transform.LayerNorm.weight", "vector", 0),
    ("mlm/norm/bias", "cls.predictions.transform.LayerNorm.bias", "vector", 0),
    ("mlm/bias", "cls.predictions.bias", "vector", 0),
    ("mlm/decoder/kernel", "cls.predictions.decoder.weight", "linear", 1),  # untied models only
    ("classifier/kernel", "classifier.weight", "linear", 1),
    ("classifier/bias", "classifier.bias", "vector", 0),
]
HEADS = {"pooler": "the pooler", "mlm": "the MLM head", "classifier": "the classification head"}
TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")  # = word embeddings, cls.predictions.bias
IGNORED_SUFFIXES = ("position_ids", "token_type_ids")  # buffers, not weights
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def model_fields_from_hf(hf: dict, tensors: dict | None = None, source: str = "config.json") -> dict:
    """Our model.* fields (family encoder) from a BERT config.json; num_labels from a classifier among
    `tensors`, if any."""
    if hf.get("model_type") != "bert":
        raise ConversionError(f"{source}: model_type={hf.get('model_type')!r} is not bert")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"{source}: position_embedding_type={hf['position_embedding_type']!r} is not "
                              f"supported (only absolute)")
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ConversionError(f"{source}: hidden_act={act!r} is not supported ({', '.join(ACTIVATIONS)})")
    get = lambda key, *a, **k: _field(hf, key, source, *a, **k)  # noqa: E731
    d, heads = get("hidden_size"), get("num_attention_heads")
    if d % heads:
        raise ConversionError(f"{source}: num_attention_heads={heads} does not divide hidden_size={d}")
    classifier = (tensors or {}).get("classifier.weight")
    return dict(
        family="encoder", vocab_size=get("vocab_size"), seq_len=get("max_position_embeddings"), d_model=d,
        n_layers=get("num_hidden_layers"), n_heads=heads, n_kv_heads=heads, head_dim=d // heads,
        d_ff=get("intermediate_size"), positions="learned", norm="layernorm",
        norm_eps=float(get("layer_norm_eps", "float", 1e-12)), norm_position="post", ffn=ACTIVATIONS[act],
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)), use_bias=True,
        dropout=float(get("hidden_dropout_prob", "float", 0.1)),
        init_std=float(get("initializer_range", "float", 0.02)),
        type_vocab_size=get("type_vocab_size", default=2),
        num_labels=int(classifier.shape[0]) if classifier is not None else 0)


def check_bert_compatible(m) -> None:
    """A ConversionError unless the encoder config has a BertConfig equivalent."""
    m = dict(m)
    want = dict(family="encoder", positions="learned", norm="layernorm", norm_position="post", use_bias=True,
                mup=False)
    wrong = [f"model.{k}={m[k]!r} (BERT: {v!r})" for k, v in want.items() if m[k] != v]
    if m["ffn"] not in ACTIVATIONS.values():
        wrong.append(f"model.ffn={m['ffn']!r} (BERT: gelu, gelu_tanh or relu)")
    if m["n_kv_heads"] != m["n_heads"] or m["n_heads"] * m["head_dim"] != m["d_model"]:
        wrong.append("grouped-query attention or head_dim * n_heads != d_model (BERT: plain multi-head)")
    if wrong:
        raise ConversionError(f"this model has no Hugging Face BERT equivalent: {'; '.join(wrong)}")


def hf_config(m) -> dict:
    """A BertConfig dict for our encoder config (type_vocab_size 0 exports one all-zero type row)."""
    m = dict(m)
    check_bert_compatible(m)
    act = {v: k for k, v in reversed(ACTIVATIONS.items())}[m["ffn"]]
    out = {"architectures": ["BertForSequenceClassification" if m["num_labels"] else "BertForMaskedLM"],
           "model_type": "bert", "vocab_size": m["vocab_size"], "hidden_size": m["d_model"],
           "num_hidden_layers": m["n_layers"], "num_attention_heads": m["n_heads"], "intermediate_size": m["d_ff"],
           "hidden_act": act, "max_position_embeddings": m["seq_len"], "type_vocab_size": max(m["type_vocab_size"], 1),
           "layer_norm_eps": m["norm_eps"], "initializer_range": m["init_std"], "hidden_dropout_prob": m["dropout"],
           "attention_probs_dropout_prob": 0.0,  # this encoder has no dropout on attention probabilities
           "tie_word_embeddings": m["tie_embeddings"], "position_embedding_type": "absolute",
           "torch_dtype": "float32"}
    if m["num_labels"]:
        out["num_labels"] = m["num_labels"]
    return out


def _fresh_params(m, seed: int = 0) -> dict:
    model = build_model(m)
    params = jax.jit(lambda r: nn.unbox(model.init(r, np.zeros((1, 8), np.int32))["params"]))(jax.random.key(seed))
    return jax.tree.map(np.asarray, jax.device_get(params))


def _names(name: str, n_layers: int) -> list[str]:
    return [name.format(i=i) for i in range(n_layers)] if "{i}" in name else [name]


def hf_to_params(tensors: dict, m, source: str = "the checkpoint", seed: int = 0) -> tuple[dict, list[str]]:
    """(our parameter tree in numpy, the heads that were absent and initialised fresh from `seed`). A tensor of
    the wrong shape, a missing encoder tensor or one this architecture does not use is a ConversionError."""
    m = dict(m)
    tensors = {k: v for k, v in tensors.items() if not k.endswith(IGNORED_SUFFIXES)}
    if any(k.startswith(("embeddings.", "encoder.", "pooler.")) for k in tensors):  # a bare BertModel
        tensors = {k if k.startswith(("cls.", "classifier.")) else "bert." + k: v for k, v in tensors.items()}
    params = _fresh_params(m, seed)
    used, fresh = set(), []
    for path, name, layout, n_in in BERT_TABLE:
        try:
            current = _get(params, path)
        except KeyError:
            continue  # e.g. the untied decoder of a tied model, or type embeddings with type_vocab_size 0
        names = _names(name, m["n_layers"])
        missing = [n for n in names if n not in tensors]
        if missing:
            head = path.split("/")[0]
            if head in HEADS and len(missing) == len(names):
                if head not in fresh:
                    fresh.append(head)
                continue
            raise ConversionError(f"{source} has no tensor {missing[0]!r} (needed for {path})")
        per_layer = current.shape[1:] if "{i}" in name else current.shape
        for n in names:
            _check_tensor(n, tensors[n], _hf_shape(layout, per_layer, n_in), source)
        arrays = [_to_ours(tensors[n], layout, per_layer) for n in names]
        _set(params, path, (np.stack(arrays) if "{i}" in name else arrays[0]).astype(current.dtype))
        used.update(names)
    unused = sorted(set(tensors) - used - set(TIED if m["tie_embeddings"] else TIED[1:]))
    if unused:
        raise ConversionError(f"{source} has tensors this encoder does not use: {unused[:5]}")
    return params, [HEADS[h] for h in fresh]


def params_to_hf(params: dict, m) -> dict:
    """Float32 HF tensors (task-model names: bert.*, cls.predictions.*, classifier.*) of our parameters."""
    m = dict(m)
    check_bert_compatible(m)
    tensors = {}
    for path, name, layout, n_in in BERT_TABLE:
        try:
            value = np.asarray(_get(params, path), dtype=np.float32)
        except KeyError:
            continue
        for i, n in enumerate(_names(name, m["n_layers"])):
            tensors[n] = _to_hf(value[i] if "{i}" in name else value, layout, n_in)
    if not m["type_vocab_size"]:  # HF always adds a token-type row: an all-zero one adds nothing
        tensors["bert.embeddings.token_type_embeddings.weight"] = np.zeros((1, m["d_model"]), np.float32)
    return tensors


def load_hf_bert(hf_dir: str):
    """(resolved config, numpy params, heads initialised fresh) of a Hugging Face BERT directory."""
    config_path, hf = read_hf_config(hf_dir)
    tensors = read_hf_tensors(hf_dir)
    cfg = converted_config(model_fields_from_hf(hf, tensors, config_path), "hf-bert", "mlm", config_path)
    params, fresh = hf_to_params(tensors, cfg.model, source=hf_dir)
    return cfg, params, fresh


def save_hf_bert(model_cfg, params: dict, out: str) -> None:
    """model.safetensors + config.json (last) of our encoder in `out`, loadable by transformers."""
    tensors = params_to_hf(jax.device_get(params), model_cfg)
    os.makedirs(out, exist_ok=True)
    safetensors_io.write_file(os.path.join(out, "model.safetensors"), tensors)
    atomic_write_json(os.path.join(out, "config.json"), hf_config(model_cfg), indent=2)
