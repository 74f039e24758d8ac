"""Hugging Face GPT-2, Llama and Mixtral checkpoints <-> llm_jax work directories, both ways, without torch.

Each family is a table of (our parameter path, HF tensor name, HF layout, input axes). The same table
drives both directions, so import and export cannot drift apart. GPT-2 fuses Q, K and V into one `c_attn`
tensor; it is split into three virtual names on import and fused again on export. Mixtral stores one tensor per
expert (w1 gate, w3 up, w2 down); they are stacked into virtual per-layer tensors of our expert layout.
"""

from __future__ import annotations

import math
import os
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.data.tokenizers import TokenizerError, load_tokenizer
from llm_jax.errors import StorageError, UserError
from llm_jax.fileio import atomic_path, atomic_write, atomic_write_json, check_new_output, read_json
from llm_jax.data.chat import copy_tokenizer_extras
from llm_jax.infer.load import load_workdir
from llm_jax.interop import safetensors_io
from llm_jax.models import build_model, lora
from llm_jax.models.accounting import param_count

# Rotary models have no position table, so `seq_len` only sets the training/eval window: capped here so a
# 128k-context checkpoint does not make the no-cache sampler run 128k-token windows.
MAX_CONVERTED_SEQ_LEN = 4096


class ConversionError(UserError):
    """The checkpoint or work directory cannot be converted; the message says why."""


# (our path, HF name; {i} = layer index, HF layout, input axes of our kernel).
# Layouts: "linear" = torch Linear (out, in); "conv1d" = GPT-2 Conv1D (in, out); "vector"/"table" = as is.
GPT2_TABLE = [
    ("embed/embedding", "wte.weight", "table", 0),
    ("pos_embed", "wpe.weight", "table", 0),
    ("norm_final/scale", "ln_f.weight", "vector", 0),
    ("norm_final/bias", "ln_f.bias", "vector", 0),
    ("layers/norm_attention/scale", "h.{i}.ln_1.weight", "vector", 0),
    ("layers/norm_attention/bias", "h.{i}.ln_1.bias", "vector", 0),
    ("layers/attention/query/kernel", "h.{i}.attn.q.weight", "conv1d", 1),
    ("layers/attention/query/bias", "h.{i}.attn.q.bias", "vector", 0),
    ("layers/attention/key/kernel", "h.{i}.attn.k.weight", "conv1d", 1),
    ("layers/attention/key/bias", "h.{i}.attn.k.bias", "vector", 0),
    ("layers/attention/value/kernel", "h.{i}.attn.v.weight", "conv1d", 1),
    ("layers/attention/value/bias", "h.{i}.attn.v.bias", "vector", 0),
    ("layers/attention/out/kernel", "h.{i}.attn.c_proj.weight", "conv1d", 2),
    ("layers/attention/out/bias", "h.{i}.attn.c_proj.bias", "vector", 0),
    ("layers/norm_mlp/scale", "h.{i}.ln_2.weight", "vector", 0),
    ("layers/norm_mlp/bias", "h.{i}.ln_2.bias", "vector", 0),
    ("layers/mlp/wi/kernel", "h.{i}.mlp.c_fc.weight", "conv1d", 1),
    ("layers/mlp/wi/bias", "h.{i}.mlp.c_fc.bias", "vector", 0),
    ("layers/mlp/wo/kernel", "h.{i}.mlp.c_proj.weight", "conv1d", 1),
    ("layers/mlp/wo/bias", "h.{i}.mlp.c_proj.bias", "vector", 0),
    ("head/kernel", "lm_head.weight", "linear", 1),
]

LLAMA_TABLE = [
    ("embed/embedding", "model.embed_tokens.weight", "table", 0),
    ("norm_final/scale", "model.norm.weight", "vector", 0),
    ("layers/norm_attention/scale", "model.layers.{i}.input_layernorm.weight", "vector", 0),
    ("layers/attention/query/kernel", "model.layers.{i}.self_attn.q_proj.weight", "linear", 1),
    ("layers/attention/key/kernel", "model.layers.{i}.self_attn.k_proj.weight", "linear", 1),
    ("layers/attention/value/kernel", "model.layers.{i}.self_attn.v_proj.weight", "linear", 1),
    ("layers/attention/out/kernel", "model.layers.{i}.self_attn.o_proj.weight", "linear", 2),
    ("layers/norm_mlp/scale", "model.layers.{i}.post_attention_layernorm.weight", "vector", 0),
    ("layers/mlp/wi_gate/kernel", "model.layers.{i}.mlp.gate_proj.weight", "linear", 1),
    ("layers/mlp/wi_up/kernel", "model.layers.{i}.mlp.up_proj.weight", "linear", 1),
    ("layers/mlp/wo/kernel", "model.layers.{i}.mlp.down_proj.weight", "linear", 1),
    ("head/kernel", "lm_head.weight", "linear", 1),
]

MIXTRAL_TABLE = [row for row in LLAMA_TABLE if "/mlp/" not in row[0]] + [
    ("layers/moe/router", "model.layers.{i}.block_sparse_moe.gate.weight", "linear", 1),
    ("layers/moe/wi", "model.layers.{i}.moe.wi", "table", 0),   # virtual: (gate|up, expert, in, out)
    ("layers/moe/wo", "model.layers.{i}.moe.wo", "table", 0),   # virtual: (expert, in, out)
]
MIXTRAL_EXPERT = "model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight"

TABLES = {"gpt2": GPT2_TABLE, "llama": LLAMA_TABLE, "mistral": LLAMA_TABLE, "mixtral": MIXTRAL_TABLE}
IGNORED = re.compile(r"(\.attn\.bias|\.attn\.masked_bias|rotary_emb\.inv_freq)$")  # buffers, not weights


# ------------------------------------------------------------------------------------------ configs


_MISSING = object()


def _field(hf: dict, key: str, source: str, kind: str = "int", default=_MISSING):
    """hf[key] checked to be a positive integer ("int") or a number ("float"); `default` when absent/null."""
    value = hf.get(key)
    if value is None:
        if default is _MISSING:
            raise ConversionError(f"{source} lacks the required field {key!r} (model_type {hf.get('model_type')!r})")
        return default
    if isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float)) \
            or (kind == "int" and value <= 0):
        want = "a positive integer" if kind == "int" else "a number"
        raise ConversionError(f"{source}: {key}={value!r} must be {want}")
    return value


def model_fields_from_hf(hf: dict, source: str = "config.json") -> tuple[str, dict]:
    """(family, our model.* fields) from a Hugging Face config.json (`source` names it in errors)."""
    if "model_type" not in hf:
        raise ConversionError(f"{source} lacks the required field 'model_type' (is it a Hugging Face model "
                              f"config?)")
    family = hf.get("model_type")
    if family == "gpt2":
        act = hf.get("activation_function", "gelu_new")
        ffn = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}.get(
            act if isinstance(act, str) else None)
        if ffn is None:
            raise ConversionError(f"{source}: GPT-2 activation_function={act!r} is not supported")
        if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn") \
                or not hf.get("scale_attn_weights", True):
            raise ConversionError(f"{source}: GPT-2 attention-scaling variants (scale_attn_by_inverse_layer_idx, "
                                  "reorder_and_upcast_attn, scale_attn_weights=false) are not supported")
        get = lambda key, *a, **k: _field(hf, key, source, *a, **k)
        d, heads = get("n_embd"), get("n_head")
        if d % heads:
            raise ConversionError(f"{source}: n_head={heads} does not divide n_embd={d}")
        return family, dict(
            vocab_size=get("vocab_size"), seq_len=get("n_positions"), d_model=d, n_layers=get("n_layer"),
            n_heads=heads, n_kv_heads=heads, head_dim=d // heads,
            d_ff=get("n_inner", default=4 * d), positions="learned", norm="layernorm",
            norm_eps=get("layer_norm_epsilon", "float", 1e-5), norm_position="pre", ffn=ffn,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)), use_bias=True,
            init_std=get("initializer_range", "float", 0.02))
    if family in ("llama", "mistral", "mixtral"):  # Mistral: Llama with a sliding window
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        if not isinstance(rope, dict):
            raise ConversionError(f"{source}: rope_parameters/rope_scaling={rope!r} must be an object")
        scaling = rope_scaling_from_hf(rope, hf, source)
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise ConversionError(f"{source}: Llama checkpoints with attention_bias or mlp_bias are not supported")
        if hf.get("hidden_act", "silu") != "silu":
            raise ConversionError(f"{source}: Llama hidden_act={hf.get('hidden_act')!r} is not supported (only silu)")
        get = lambda key, *a, **k: _field(hf, key, source, *a, **k)
        d, heads = get("hidden_size"), get("num_attention_heads")
        theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        if isinstance(theta, bool) or not isinstance(theta, (int, float)):
            raise ConversionError(f"{source}: rope_theta={theta!r} must be a number")
        moe = {}
        if family == "mixtral":
            seq_len = min(get("max_position_embeddings", default=2048), MAX_CONVERTED_SEQ_LEN)
            moe = dict(moe_experts=get("num_local_experts"), moe_top_k=get("num_experts_per_tok"), moe_every=1,
                       moe_shared_experts=0, moe_d_ff=0, moe_router="softmax", moe_norm_topk=True,
                       moe_capacity_factor=0.0, moe_z_weight=0.0,
                       moe_balance_weight=balance_weight_from_hf(get("router_aux_loss_coef", "float", 0.001),
                                                                 get("num_experts_per_tok"), get("num_hidden_layers")))
        window = hf.get("sliding_window") if family != "llama" and hf.get("use_sliding_window", True) else None
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ConversionError(f"{source}: sliding_window={window!r} must be null or a positive integer")
        return family, dict(
            **moe, **scaling, attention_window=window or 0,
            vocab_size=get("vocab_size"), seq_len=min(get("max_position_embeddings", default=2048),
                                                      MAX_CONVERTED_SEQ_LEN),
            d_model=d, n_layers=get("num_hidden_layers"), n_heads=heads,
            n_kv_heads=get("num_key_value_heads", default=heads),
            head_dim=get("head_dim", default=d // heads), d_ff=get("intermediate_size"),
            positions="rope", rope_theta=float(theta),
            norm="rmsnorm", norm_eps=get("rms_norm_eps", "float", 1e-6), norm_position="pre", ffn="swiglu",
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)), use_bias=False,
            init_std=get("initializer_range", "float", 0.02))
    raise ConversionError(f"{source}: model_type={family!r} is not supported (supported: gpt2, llama, mistral, "
                          "mixtral)")


# Hugging Face rope_parameters keys of each rope_type -> our model.rope_* keys (models/rope_scaling.py)
ROPE_KEYS = {"linear": {"factor": "rope_factor"},
             "dynamic": {"factor": "rope_factor"},
             "yarn": {"factor": "rope_factor", "original_max_position_embeddings": "rope_original_len",
                      "beta_fast": "rope_yarn_beta_fast", "beta_slow": "rope_yarn_beta_slow",
                      "attention_factor": "rope_attention_factor"},
             "llama3": {"factor": "rope_factor", "original_max_position_embeddings": "rope_original_len",
                        "low_freq_factor": "rope_low_freq_factor", "high_freq_factor": "rope_high_freq_factor"}}


def rope_scaling_from_hf(rope: dict, hf: dict, source: str) -> dict:
    """model.rope_* fields of a Llama-style rope_parameters / rope_scaling object, or one ConversionError."""
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "default":
        return {}
    if rope_type not in ROPE_KEYS:
        raise ConversionError(f"{source}: rope_type={rope_type!r} is not supported (supported: default, "
                              f"{', '.join(ROPE_KEYS)})")
    if rope_type == "yarn" and (rope.get("mscale") or rope.get("mscale_all_dim") or rope.get("truncate") is False):
        raise ConversionError(f"{source}: YaRN with mscale/mscale_all_dim or truncate=false (DeepSeek's variant) is "
                              "not supported")
    fields = {"rope_scaling": rope_type}
    if rope_type == "dynamic":  # transformers scales beyond max_position_embeddings
        fields["rope_original_len"] = hf.get("max_position_embeddings", 2048)
    if rope_type == "yarn" and rope.get("factor") is None and rope.get("original_max_position_embeddings"):
        rope = dict(rope, factor=hf.get("max_position_embeddings", 2048) / rope["original_max_position_embeddings"])
    for hf_key, ours in ROPE_KEYS[rope_type].items():
        value = rope.get(hf_key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConversionError(f"{source}: rope {hf_key}={value!r} must be a number")
        fields[ours] = int(value) if ours == "rope_original_len" else float(value)
    return fields


def rope_parameters_to_hf(m: dict) -> dict:
    out = {"rope_type": "default" if m["rope_scaling"] == "none" else m["rope_scaling"], "rope_theta": m["rope_theta"]}
    for hf_key, ours in ROPE_KEYS.get(m["rope_scaling"], {}).items():
        if not (ours == "rope_attention_factor" and not m[ours]):  # 0 = derived from the factor, as in transformers
            out[hf_key] = m[ours]
    return out


def converted_config(fields: dict, name: str, objective: str, config_path: str):
    """The resolved, validated run config of a converted model whose model.* keys are `fields`, or one
    ConversionError naming the Hugging Face config that describes something llm_jax cannot build."""
    cfg = config_lib.default_config()
    cfg.name, cfg.train.objective = name, objective
    try:
        for key, value in fields.items():
            cfg.model[key] = value
        cfg = config_lib.resolve(cfg)
        config_lib.validate(cfg)
    except (config_lib.ConfigError, TypeError, ValueError) as e:
        raise ConversionError(f"{config_path} describes a model llm_jax cannot build: {e}") from e
    return cfg


def read_hf_tensors(hf_dir: str) -> dict:
    """Every tensor of a Hugging Face directory's *.safetensors files, or one ConversionError (storage errors
    keep their own exit status)."""
    try:
        tensors = safetensors_io.read_dir(hf_dir)
    except StorageError:
        raise
    except UserError as e:
        raise ConversionError(str(e)) from e
    if not tensors:
        raise ConversionError(f"{hf_dir!r} has no *.safetensors files")
    return tensors


def balance_weight_from_hf(coef: float, top_k: int, n_layers: int) -> float:
    """Our per-layer balancing weight of an HF `router_aux_loss_coef`: HF's loss is top_k times ours and taken once
    over all layers together, ours is summed over layers, so the same strength is coef * top_k / n_layers."""
    return coef * top_k / n_layers


def read_hf_config(hf_dir: str) -> tuple[str, dict]:
    """(path, parsed JSON object) of a Hugging Face directory's config.json, or one ConversionError."""
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise ConversionError(f"{hf_dir!r} has no config.json")
    try:
        return path, read_json(path, "Hugging Face config")
    except StorageError:
        raise
    except UserError as e:
        raise ConversionError(str(e)) from e


def family_of(m) -> str:
    """Which HF architecture a model config is, or a ConversionError naming the field that has none."""
    m = dict(m)
    if m.get("mup"):
        raise ConversionError("a muP model (model.mup=True) has no Hugging Face equivalent: its 1/d attention "
                              "scale and output multiplier are not fields of GPT-2 or Llama configs")
    if m.get("family", "decoder") != "decoder":
        raise ConversionError(f"model.family={m['family']!r}: only decoder-only models convert to GPT-2, Llama "
                              f"or Mixtral")
    gpt2 = dict(positions="learned", norm="layernorm", norm_position="pre", use_bias=True, tie_embeddings=True)
    llama = dict(positions="rope", norm="rmsnorm", norm_position="pre", use_bias=False, ffn="swiglu")
    mixtral = dict(moe_every=1, moe_shared_experts=0, moe_router="softmax", moe_norm_topk=True)
    if m.get("local_global_pattern") or m.get("attention_stride") or m.get("attention_global_tokens"):
        raise ConversionError("alternating local/global layers, strided and global-token attention have no "
                              "GPT-2, Llama, Mistral or Mixtral equivalent")
    if m.get("rope_scaling") == "ntk":
        raise ConversionError("model.rope_scaling='ntk' (static NTK-aware) has no Hugging Face rope_type; "
                              "'dynamic' is the NTK variant transformers knows")
    if all(m[k] == v for k, v in gpt2.items()) and m["ffn"] in ("gelu_tanh", "gelu", "relu") \
            and m["n_kv_heads"] == m["n_heads"] and m["n_heads"] * m["head_dim"] == m["d_model"] \
            and not m["moe_experts"] and not m.get("attention_window"):
        return "gpt2"
    if all(m[k] == v for k, v in llama.items()) and not m["moe_experts"]:
        return "mistral" if m.get("attention_window") else "llama"
    if all(m[k] == v for k, v in {**llama, **mixtral}.items()) and m["moe_d_ff"] in (0, m["d_ff"]):
        return "mixtral"
    raise ConversionError("this model has no Hugging Face equivalent: GPT-2 needs learned positions, pre-LN "
                          "LayerNorm with biases, tied embeddings, MHA, no window; Llama (Mistral with a sliding "
                          "window) needs RoPE, RMSNorm, SwiGLU, no biases; Mixtral is Llama with an MoE "
                          "feed-forward in every layer (softmax router, normalised top-k, no shared experts)")


def hf_config(m, family: str, tokenizer=None) -> dict:
    m = dict(m)
    special = {}
    if tokenizer is not None:
        special = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}
    if family == "gpt2":
        act = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[m["ffn"]]
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": m["vocab_size"],
                "n_positions": m["seq_len"], "n_embd": m["d_model"], "n_layer": m["n_layers"],
                "n_head": m["n_heads"], "n_inner": m["d_ff"], "activation_function": act,
                "layer_norm_epsilon": m["norm_eps"], "tie_word_embeddings": True,
                "initializer_range": m["init_std"], "torch_dtype": "float32", **special}
    if family == "mixtral":
        moe = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
               "num_local_experts": m["moe_experts"], "num_experts_per_tok": m["moe_top_k"],
               "router_aux_loss_coef": m["moe_balance_weight"] * m["n_layers"] / m["moe_top_k"],
               "sliding_window": m["attention_window"] or None}
    elif family == "mistral":
        moe = {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
               "sliding_window": m["attention_window"]}
    else:
        moe = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
               "mlp_bias": False}
    return {**moe, "vocab_size": m["vocab_size"],
            "hidden_size": m["d_model"], "intermediate_size": m["d_ff"], "num_hidden_layers": m["n_layers"],
            "num_attention_heads": m["n_heads"], "num_key_value_heads": m["n_kv_heads"], "head_dim": m["head_dim"],
            # transformers' dynamic NTK scales beyond max_position_embeddings: there it is the original context
            "max_position_embeddings": m["rope_original_len"] if m["rope_scaling"] == "dynamic" else m["seq_len"],
            "rms_norm_eps": m["norm_eps"], "hidden_act": "silu",
            "rope_theta": m["rope_theta"], "rope_parameters": rope_parameters_to_hf(m),
            "tie_word_embeddings": m["tie_embeddings"], "initializer_range": m["init_std"], "torch_dtype": "float32",
            **special}


# ---------------------------------------------------------------------------------------- tensors


def _to_ours(array: np.ndarray, layout: str, shape: tuple) -> np.ndarray:
    if layout == "linear":
        array = array.T
    return np.asarray(array).reshape(shape)


def _to_hf(array: np.ndarray, layout: str, n_in: int) -> np.ndarray:
    if layout in ("vector", "table"):
        return array.reshape(-1) if layout == "vector" else array
    flat = array.reshape(math.prod(array.shape[:n_in]), -1)
    return flat.T if layout == "linear" else flat


def _get(tree: dict, path: str):
    for key in path.split("/"):
        tree = tree[key]
    return tree


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


_FLOAT_DTYPES = {np.dtype(t) for t in (np.float16, np.float32, np.float64, ml_dtypes.bfloat16)}


def _hf_shape(layout: str, shape: tuple, n_in: int) -> tuple:
    """The shape the HF tensor must have for one of our (per-layer) parameters of `shape`."""
    if layout == "table":
        return tuple(shape)
    if layout == "vector":
        return (math.prod(shape),)
    ins, outs = math.prod(shape[:n_in]), math.prod(shape[n_in:])
    return (outs, ins) if layout == "linear" else (ins, outs)


def _check_tensor(name: str, array, expected: tuple, source: str, shown: str | None = None) -> None:
    shown = shown or name
    if np.dtype(array.dtype) not in _FLOAT_DTYPES:
        raise ConversionError(f"tensor {shown!r} in {source} has dtype {array.dtype}; weights must be floating "
                              f"point (F16, BF16, F32, F64)")
    if tuple(array.shape) != tuple(expected):
        raise ConversionError(f"tensor {shown!r} in {source} has shape {tuple(array.shape)} but the config needs "
                              f"{tuple(expected)}")


def _split_gpt2_qkv(tensors: dict, n_layers: int, d: int, source: str = "the checkpoint",
                    prefix: str = "") -> dict:
    out = dict(tensors)
    for i in range(n_layers):
        for suffix, shape in (("weight", (d, 3 * d)), ("bias", (3 * d,))):
            name = f"h.{i}.attn.c_attn.{suffix}"
            if name not in out:
                raise ConversionError(f"{source} has no tensor {prefix + name!r}")
            _check_tensor(name, out[name], shape, source, prefix + name)
        w, b = out.pop(f"h.{i}.attn.c_attn.weight"), out.pop(f"h.{i}.attn.c_attn.bias")
        for j, name in enumerate("qkv"):
            out[f"h.{i}.attn.{name}.weight"] = w[:, j * d:(j + 1) * d]
            out[f"h.{i}.attn.{name}.bias"] = b[j * d:(j + 1) * d]
    return out


def _fuse_gpt2_qkv(tensors: dict, n_layers: int) -> dict:
    out = dict(tensors)
    for i in range(n_layers):
        out[f"h.{i}.attn.c_attn.weight"] = np.concatenate([out.pop(f"h.{i}.attn.{n}.weight") for n in "qkv"], 1)
        out[f"h.{i}.attn.c_attn.bias"] = np.concatenate([out.pop(f"h.{i}.attn.{n}.bias") for n in "qkv"], 0)
    return out


def _stack_mixtral_experts(tensors: dict, m: dict, source: str) -> dict:
    """Per-expert w1/w3/w2 (torch Linear layout) -> virtual per-layer `moe.wi` (2, E, d, f) and `moe.wo` (E, f, d)."""
    out = dict(tensors)
    E, d, f = m["moe_experts"], m["d_model"], m["d_ff"]
    for i in range(m["n_layers"]):
        def take(e, w, shape):
            name = MIXTRAL_EXPERT.format(i=i, e=e, w=w)
            if name not in out:
                raise ConversionError(f"{source} has no tensor {name!r}")
            _check_tensor(name, out[name], shape, source)
            return np.asarray(out.pop(name)).T
        gate, up = ([take(e, w, (f, d)) for e in range(E)] for w in ("w1", "w3"))
        out[f"model.layers.{i}.moe.wi"] = np.stack([np.stack(gate), np.stack(up)])
        out[f"model.layers.{i}.moe.wo"] = np.stack([take(e, "w2", (d, f)) for e in range(E)])
    return out


def _unstack_mixtral_experts(tensors: dict, m: dict) -> dict:
    out = dict(tensors)
    for i in range(m["n_layers"]):
        wi, wo = out.pop(f"model.layers.{i}.moe.wi"), out.pop(f"model.layers.{i}.moe.wo")
        for e in range(m["moe_experts"]):
            for w, value in (("w1", wi[0, e]), ("w3", wi[1, e]), ("w2", wo[e])):
                out[MIXTRAL_EXPERT.format(i=i, e=e, w=w)] = np.ascontiguousarray(value.T)
    return out


def param_shapes(m) -> dict:
    model = build_model(m)
    tree = jax.eval_shape(lambda r: nn.unbox(model.init(r, jnp.zeros((1, 8), jnp.int32))["params"]),
                          jax.random.key(0))
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


def hf_to_params(family: str, tensors: dict, m, source: str = "the checkpoint") -> dict:
    """Our parameter tree (numpy, in model.param_dtype) from HF tensors; a missing tensor, or one of the wrong
    shape or dtype for the config, is a ConversionError naming it (`source` names where the tensors came from)."""
    m = dict(m)
    tensors = {k: v for k, v in tensors.items() if not IGNORED.search(k)}
    prefix = ""
    if family == "gpt2":
        if any(k.startswith("transformer.") for k in tensors):
            prefix = "transformer."
        tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
        tensors = _split_gpt2_qkv(tensors, m["n_layers"], m["d_model"], source, prefix)
    if family == "mixtral":
        tensors = _stack_mixtral_experts(tensors, m, source)
    in_file = lambda n: n if n == "lm_head.weight" else prefix + n  # the name as the file spells it
    shapes = param_shapes(m)
    params, used = {}, set()
    for path, name, layout, n_in in TABLES[family]:
        try:
            shape, dtype = _get(shapes, path)
        except KeyError:
            continue  # e.g. the head of a tied model
        names = [name.format(i=i) for i in range(m["n_layers"])] if "{i}" in name else [name]
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ConversionError(f"{source} has no tensor {in_file(missing[0])!r} (needed for {path})")
        per_layer = shape[1:] if "{i}" in name else shape
        for n in names:  # GPT-2's q/k/v are slices of c_attn, whose shape was checked when it was split
            _check_tensor(n, tensors[n], _hf_shape(layout, per_layer, n_in), source, in_file(n))
        arrays = [_to_ours(tensors[n], layout, per_layer) for n in names]
        _set(params, path, (np.stack(arrays) if "{i}" in name else arrays[0]).astype(dtype))
        used.update(names)
    unused = sorted(set(tensors) - used - ({"lm_head.weight"} if m["tie_embeddings"] else set()))
    if unused:
        raise ConversionError(f"{source} has tensors this architecture does not use: "
                              f"{[in_file(n) for n in unused[:5]]}")
    return params


def params_to_hf(family: str, params: dict, m) -> dict:
    m = dict(m)
    tensors = {}
    for path, name, layout, n_in in TABLES[family]:
        try:
            value = np.asarray(_get(params, path), dtype=np.float32)
        except KeyError:
            continue
        if "{i}" in name:
            for i in range(m["n_layers"]):
                tensors[name.format(i=i)] = _to_hf(value[i], layout, n_in)
        else:
            tensors[name] = _to_hf(value, layout, n_in)
    if family == "mixtral":
        tensors = _unstack_mixtral_experts(tensors, m)
    if family == "gpt2":
        tensors = _fuse_gpt2_qkv(tensors, m["n_layers"])
        tensors = {k if k == "lm_head.weight" else "transformer." + k: v for k, v in tensors.items()}
    return tensors


# --------------------------------------------------------------------------------------- commands


HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def _find_tokenizer(src_dir: str, what: str) -> str:
    """The tokenizer file of `src_dir` that Hugging Face reads (checked loadable), or one ConversionError."""
    for name in HF_TOKENIZER_FILES:
        path = os.path.join(src_dir, name)
        if os.path.isfile(path):
            try:
                load_tokenizer(path)
            except TokenizerError as e:
                raise ConversionError(f"{what} {src_dir!r}: {e}") from e
            return name
    raise ConversionError(f"{what} {src_dir!r} has no tokenizer.json or tokenizer.model (the tokenizer files "
                          f"Hugging Face reads)")


def _copy_file(src: str, dest: str) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _check_out(out: str) -> None:
    check_new_output(out, flag="--out", error=ConversionError)


def from_hf(hf_dir: str, out: str) -> dict:
    """Writes a work directory (config.json, tokenizer, checkpoints/0/params) from a HF model directory.

    Everything is read and checked before `out` is created; config.json is written last, so a directory that
    has one is complete."""
    _check_out(out)
    config_path, hf = read_hf_config(hf_dir)
    family, fields = model_fields_from_hf(hf, config_path)
    cfg = converted_config(fields, f"hf-{family}", "causal_lm", config_path)
    tokenizer_file = _find_tokenizer(hf_dir, "Hugging Face directory")
    tensors = read_hf_tensors(hf_dir)
    params = hf_to_params(family, tensors, cfg.model, source=hf_dir)
    os.makedirs(out, exist_ok=True)
    checkpoint.save_params(out, jax.tree.map(jnp.asarray, params))
    _copy_file(os.path.join(hf_dir, tokenizer_file), os.path.join(out, tokenizer_file))
    copy_tokenizer_extras(hf_dir, out)
    atomic_write(os.path.join(out, "config.json"), config_lib.to_json(cfg))
    return {"family": family, "params": param_count(cfg.model), "out": out, "tokenizer": tokenizer_file}


def to_hf(workdir: str, out: str) -> dict:
    """Writes model.safetensors, the tokenizer and config.json of `workdir`'s latest checkpoint to `out`
    (each file atomically; config.json last, so a directory that has one is complete)."""
    _check_out(out)
    loaded = load_workdir(workdir)
    family = family_of(loaded.cfg.model)
    tokenizer_file = _find_tokenizer(workdir, "work directory")
    os.makedirs(out, exist_ok=True)
    params = jax.device_get(loaded.params)
    if loaded.cfg.model.peft != "none":  # a fine-tuned LoRA run: its adapters folded into the exported weights
        params = lora.merge(params, loaded.cfg.model)
    tensors = params_to_hf(family, params, loaded.cfg.model)
    safetensors_io.write_file(os.path.join(out, "model.safetensors"), tensors)
    _copy_file(os.path.join(workdir, tokenizer_file), os.path.join(out, tokenizer_file))
    atomic_write_json(os.path.join(out, "config.json"), hf_config(loaded.cfg.model, family, loaded.tokenizer),
                      indent=2)
    return {"family": family, "params": param_count(loaded.cfg.model), "out": out, "tokenizer": tokenizer_file,
            "step": loaded.step}
