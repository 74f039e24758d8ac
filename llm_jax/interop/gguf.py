"""`llm-jax convert from-gguf`: a Llama-family GGUF file (llama.cpp's format) -> a work directory.

The `gguf` package reads the file; every tensor is dequantized to float32 as it is read (F32, F16, BF16, Q8_0,
Q4_0, Q4_1, the K-quants: whatever `gguf.quants.dequantize` knows). The metadata becomes a Hugging Face-style
Llama config and the tensors get their Hugging Face names, so the conversion then runs through the same table as
`convert from-hf` (llm_jax/interop/hf.py) and cannot drift from it. llama.cpp's converter permutes the rows of
the query and key projections (GGML rotates adjacent pairs, Hugging Face Llama rotates halves); that permutation
is undone here. The tokenizer is rebuilt by `transformers` from the file's vocabulary, merges and pre-tokenizer
(the `hf` extra) and written as tokenizer.json.
"""

from __future__ import annotations

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.fileio import atomic_write
from llm_jax.data.chat import copy_tokenizer_extras
from llm_jax.interop.hf import (ConversionError, _check_out, _copy_file, converted_config, hf_to_params,
                                model_fields_from_hf)
from llm_jax.models.accounting import param_count

# GGUF tensor name -> Hugging Face Llama name ({i} = layer)
NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
IGNORED = ("rope_freqs.weight",)  # llama3 frequency factors: recomputed from the metadata


def _reader(path: str):
    try:
        import gguf
    except ImportError:
        raise ConversionError("convert from-gguf needs the gguf package: pip install -e '.[gguf]'") from None
    if not os.path.isfile(path):
        raise ConversionError(f"--gguf {path} is not a file")
    try:
        return gguf, gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 (a truncated or foreign file fails in many ways inside the reader)
        raise ConversionError(f"--gguf {path} is not a readable GGUF file: {str(e).splitlines()[0][:200]}") from e


def _metadata(reader) -> dict:
    out = {}
    for key, field in reader.fields.items():
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                   "tokenizer.ggml.scores"):
            continue
        try:
            out[key] = field.contents()
        except Exception:  # noqa: BLE001 (metadata this converter does not read)
            pass
    return out


def hf_config_from_gguf(meta: dict, source: str) -> dict:
    """A Hugging Face Llama config.json (as a dict) from GGUF metadata."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ConversionError(f"{source}: general.architecture={arch!r}; from-gguf converts Llama-family files "
                              f"(architecture 'llama')")
    def get(key, default=None):
        value = meta.get(f"llama.{key}", default)
        if value is None:
            raise ConversionError(f"{source} lacks the metadata key 'llama.{key}'")
        return value
    hf = {"model_type": "llama", "hidden_size": int(get("embedding_length")),
          "intermediate_size": int(get("feed_forward_length")), "num_hidden_layers": int(get("block_count")),
          "num_attention_heads": int(get("attention.head_count")),
          "num_key_value_heads": int(get("attention.head_count_kv", get("attention.head_count"))),
          "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
          "rope_theta": float(get("rope.freq_base", 10000.0)),
          "max_position_embeddings": int(get("context_length", 2048)), "hidden_act": "silu"}
    hf["head_dim"] = int(get("rope.dimension_count", hf["hidden_size"] // hf["num_attention_heads"]))
    scaling = meta.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        hf["rope_scaling"] = {"rope_type": scaling, "factor": float(get("rope.scaling.factor")),
                              "original_max_position_embeddings": int(get("rope.scaling.original_context_length"))}
    return hf


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: GGML's (head, pair, 2) row order back to Hugging Face's (head, 2,
    half) rotate-half order."""
    out_dim = w.shape[0]
    return w.reshape(heads, out_dim // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_tensors(gguf, reader, hf: dict, source: str) -> dict:
    """Hugging Face-named float32 tensors (out, in), dequantized."""
    tensors = {}
    n_layers = hf["num_hidden_layers"]
    lookup = {}
    for pattern, hf_name in NAMES.items():
        for i in range(n_layers if "{i}" in pattern else 1):
            lookup[pattern.format(i=i)] = hf_name.format(i=i)
    for t in reader.tensors:
        if t.name in IGNORED:
            continue
        if t.name not in lookup:
            raise ConversionError(f"{source} has a tensor this Llama converter does not know: {t.name!r}")
        try:
            array = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise ConversionError(f"{source}: tensor {t.name!r} is {t.tensor_type.name}, which the gguf package "
                                  f"cannot dequantize ({e})") from e
        array = np.asarray(array, np.float32).reshape([int(d) for d in reversed(t.shape)])
        if t.name.endswith("attn_q.weight"):
            array = _unpermute(array, hf["num_attention_heads"])
        elif t.name.endswith("attn_k.weight"):
            array = _unpermute(array, hf["num_key_value_heads"])
        tensors[lookup[t.name]] = array
    hf["tie_word_embeddings"] = "lm_head.weight" not in tensors
    hf["vocab_size"] = int(tensors["model.embed_tokens.weight"].shape[0])
    return tensors


def write_tokenizer(path: str, out: str) -> None:
    """tokenizer.json rebuilt by transformers from the GGUF file's tokenizer, with its tokenizer_config.json
    (which tokens are BOS / EOS) and chat template when the file has them."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConversionError("convert from-gguf rebuilds the tokenizer with transformers: pip install -e "
                              "'.[hf]'") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                                  gguf_file=os.path.basename(path))
    except Exception as e:  # noqa: BLE001
        raise ConversionError(f"--gguf {path}: transformers cannot rebuild its tokenizer: "
                              f"{str(e).splitlines()[0][:200]}") from e
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        _copy_file(os.path.join(tmp, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
        copy_tokenizer_extras(tmp, out)


def from_gguf(path: str, out: str) -> dict:
    """Writes a work directory (config.json, tokenizer.json, checkpoints/0/params) from a GGUF file; everything
    is read and checked before `out` is created, config.json last."""
    _check_out(out)
    gguf, reader = _reader(path)
    meta = _metadata(reader)
    source = f"--gguf {path}"
    hf = hf_config_from_gguf(meta, source)
    tensors = read_tensors(gguf, reader, hf, source)
    family, fields = model_fields_from_hf(hf, source)
    cfg = converted_config(fields, f"gguf-{meta.get('general.basename', 'llama')}", "causal_lm", source)
    params = hf_to_params(family, tensors, cfg.model, source=source)
    os.makedirs(out, exist_ok=True)
    write_tokenizer(path, out)
    checkpoint.save_params(out, jax.tree.map(jnp.asarray, params))
    atomic_write(os.path.join(out, "config.json"), config_lib.to_json(cfg))
    return {"family": family, "params": param_count(cfg.model), "out": out, "tokenizer": "tokenizer.json",
            "quantization": sorted({t.tensor_type.name for t in reader.tensors})}
