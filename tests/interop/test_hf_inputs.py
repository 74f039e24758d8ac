"""Damaged or mismatched Hugging Face directories and work directories are one ConversionError naming the file
(no torch needed: the HF directories are written from our own parameters); outputs are checked first and written
atomically."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import flax.linen as nn
import numpy as np
import pytest

from helpers import small_config
from llm_jax.interop import safetensors_io
from llm_jax.interop.hf import (ConversionError, from_hf, hf_config, model_fields_from_hf, params_to_hf,
                                read_hf_config, to_hf)
from llm_jax.models import build_model

LLAMA = dict(positions="rope", norm="rmsnorm", use_bias=False, ffn="swiglu", tie_embeddings=False)


def _word_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"<unk>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate("to be or not that is the question".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))


@functools.lru_cache(maxsize=None)
def _tiny(family: str) -> tuple[dict, dict]:
    """(HF config, HF tensors) of a tiny random model of `family`."""
    cfg = small_config(**(LLAMA if family == "llama" else {}))
    model = build_model(cfg.model)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    return hf_config(cfg.model, family), params_to_hf(family, jax.device_get(params), cfg.model)


def make_hf_dir(directory, family="llama", tokenizer=True) -> tuple[str, dict, dict]:
    """A Hugging Face model directory (config.json, model.safetensors, tokenizer.json) of a tiny random model."""
    hf, tensors = _tiny(family)
    hf, tensors = dict(hf), dict(tensors)
    os.makedirs(directory, exist_ok=True)
    safetensors_io.write_file(os.path.join(directory, "model.safetensors"), tensors)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf, f)
    if tokenizer:
        _word_tokenizer(os.path.join(directory, "tokenizer.json"))
    return str(directory), hf, tensors


def _rewrite(hf_dir, tensors):
    safetensors_io.write_file(os.path.join(hf_dir, "model.safetensors"), tensors)


# --------------------------------------------------------------------------------------------- config.json


@pytest.mark.parametrize("content, problem", [
    ("", "is empty"),
    ('{"model_type": "llama", "hidden_si', "not valid JSON"),
    ("model_type = llama\n", "not valid JSON"),
    ("[1, 2]", "holds a JSON list, expected a dict"),
])
def test_an_unreadable_hf_config_is_one_error_naming_it(tmp_path, content, problem):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConversionError, match=problem) as e:
        read_hf_config(str(tmp_path))
    assert str(tmp_path / "config.json") in str(e.value)


@pytest.mark.parametrize("family, drop, change, problem", [
    ("llama", "model_type", {}, "lacks the required field 'model_type'"),
    ("llama", "hidden_size", {}, "lacks the required field 'hidden_size'"),
    ("llama", "num_hidden_layers", {}, "lacks the required field 'num_hidden_layers'"),
    ("llama", None, {"intermediate_size": "96"}, "intermediate_size='96' must be a positive integer"),
    ("llama", None, {"rope_theta": "big", "rope_parameters": None}, "rope_theta='big' must be a number"),
    ("gpt2", "n_embd", {}, "lacks the required field 'n_embd'"),
    ("gpt2", None, {"n_head": 0}, "n_head=0 must be a positive integer"),
    ("gpt2", None, {"n_head": 5}, "n_head=5 does not divide n_embd=32"),
])
def test_missing_or_wrong_hf_config_fields_name_the_file_and_field(family, drop, change, problem):
    cfg = small_config(**(LLAMA if family == "llama" else {}))
    hf = dict(hf_config(cfg.model, family), **change)
    hf.pop(drop, None)
    with pytest.raises(ConversionError, match=problem) as e:
        model_fields_from_hf(hf, "/models/x/config.json")
    assert "/models/x/config.json" in str(e.value)


def test_a_config_describing_an_unbuildable_model_names_the_file(tmp_path):
    hf_dir, hf, _ = make_hf_dir(tmp_path / "hf")
    hf["num_key_value_heads"] = 3  # does not divide 4 heads
    (tmp_path / "hf" / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ConversionError, match=r"config.json describes a model llm_jax cannot build: "
                                              r"model.n_kv_heads=3 must divide") as e:
        from_hf(hf_dir, str(tmp_path / "out"))
    assert hf_dir in str(e.value) and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- tensors


def test_a_tensor_of_the_wrong_shape_names_the_tensor_and_both_shapes(tmp_path):
    hf_dir, _, tensors = make_hf_dir(tmp_path / "hf")
    name = "model.layers.1.self_attn.q_proj.weight"
    _rewrite(hf_dir, dict(tensors, **{name: np.zeros((16, 32), np.float32)}))
    with pytest.raises(ConversionError, match=rf"tensor '{name}' in {hf_dir} has shape \(16, 32\) but the config "
                                              rf"needs \(32, 32\)"):
        from_hf(hf_dir, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_gpt2_fused_qkv_of_the_wrong_shape_is_named_as_in_the_file(tmp_path):
    hf_dir, _, tensors = make_hf_dir(tmp_path / "hf", "gpt2")
    name = "transformer.h.0.attn.c_attn.weight"
    _rewrite(hf_dir, dict(tensors, **{name: np.zeros((32, 64), np.float32)}))
    with pytest.raises(ConversionError, match=rf"tensor '{name}' .* shape \(32, 64\) but the config needs "
                                              rf"\(32, 96\)"):
        from_hf(hf_dir, str(tmp_path / "out"))


def test_a_tensor_of_a_non_float_dtype_or_a_missing_one_is_named(tmp_path):
    hf_dir, _, tensors = make_hf_dir(tmp_path / "hf")
    name = "model.norm.weight"
    _rewrite(hf_dir, dict(tensors, **{name: np.ones(32, np.int32)}))
    with pytest.raises(ConversionError, match=rf"tensor '{name}' .* has dtype int32; weights must be floating"):
        from_hf(hf_dir, str(tmp_path / "out"))
    _rewrite(hf_dir, {k: v for k, v in tensors.items() if k != name})
    with pytest.raises(ConversionError, match=rf"{hf_dir} has no tensor '{name}'"):
        from_hf(hf_dir, str(tmp_path / "out"))


def test_a_truncated_safetensors_file_is_a_conversion_error_naming_it(tmp_path):
    hf_dir, _, _ = make_hf_dir(tmp_path / "hf")
    path = os.path.join(hf_dir, "model.safetensors")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 100])
    with pytest.raises(ConversionError, match=rf"safetensors file {path}: tensor .* \(truncated\?\)"):
        from_hf(hf_dir, str(tmp_path / "out"))


# ------------------------------------------------------------------------------------ tokenizers and --out


def test_a_missing_or_broken_tokenizer_is_refused_before_writing_anything(tmp_path):
    hf_dir, _, _ = make_hf_dir(tmp_path / "hf", tokenizer=False)
    with pytest.raises(ConversionError, match=rf"{hf_dir}' has no tokenizer.json or tokenizer.model"):
        from_hf(hf_dir, str(tmp_path / "out"))
    (tmp_path / "hf" / "tokenizer.json").write_text('{"version": "1.0", "mod')
    with pytest.raises(ConversionError, match="cannot load tokenizer .*tokenizer.json"):
        from_hf(hf_dir, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_out_is_checked_before_any_work(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    (tmp_path / "file").write_text("x")
    nowhere = str(tmp_path / "no-such-hf-dir")  # never read: --out is refused first
    with pytest.raises(ConversionError, match="--out .*full exists and is not empty; choose a new --out"):
        from_hf(nowhere, str(tmp_path / "full"))
    with pytest.raises(ConversionError, match="--out .*file exists and is not a directory"):
        to_hf(str(tmp_path / "no-such-workdir"), str(tmp_path / "file"))
    with pytest.raises(ConversionError, match="--out .*cannot be created: .*file is a file"):
        from_hf(nowhere, str(tmp_path / "file" / "sub"))


def test_round_trip_writes_complete_directories_without_temporaries(tmp_path):
    hf_dir, hf, tensors = make_hf_dir(tmp_path / "hf")
    wd = str(tmp_path / "wd")
    info = from_hf(hf_dir, wd)
    assert info["family"] == "llama" and sorted(os.listdir(wd)) == ["checkpoints", "config.json", "tokenizer.json"]
    out = str(tmp_path / "back")
    to_hf(wd, out)
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.json"]  # nothing .tmp-*
    back = safetensors_io.read_file(os.path.join(out, "model.safetensors"))
    assert sorted(back) == sorted(tensors)
    for name in tensors:
        np.testing.assert_array_equal(back[name], tensors[name])
    assert json.load(open(os.path.join(out, "config.json")))["hidden_size"] == hf["hidden_size"]


def test_to_hf_refuses_a_work_directory_without_a_hugging_face_tokenizer_before_writing(tmp_path):
    hf_dir, _, _ = make_hf_dir(tmp_path / "hf")
    wd = str(tmp_path / "wd")
    from_hf(hf_dir, wd)
    from llm_jax.data.tokenizers import CharTokenizer
    os.remove(os.path.join(wd, "tokenizer.json"))
    CharTokenizer.train(["to be or not"]).save(wd)  # loadable by llm_jax, not by transformers
    with pytest.raises(ConversionError, match="work directory .* has no tokenizer.json or tokenizer.model"):
        to_hf(wd, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
