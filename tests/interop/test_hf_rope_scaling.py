"""RoPE scaling and sliding windows against transformers: tiny random Llama models with every rope_type we import
(and a Mistral with a sliding window) give the same float32 logits within 1e-4 after from-hf, on sequences longer
than the original context; to-hf writes configs that transformers reads back to the same logits."""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the `hf` extra (transformers + CPU torch) is not installed")
transformers = pytest.importorskip("transformers", reason="the `hf` extra (transformers) is not installed")

from llm_jax.interop.hf import (ConversionError, converted_config, family_of, hf_config, hf_to_params,  # noqa: E402
                                model_fields_from_hf, params_to_hf, read_hf_tensors)
from llm_jax.models import build_model  # noqa: E402

VOCAB = 128
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=16, tie_word_embeddings=False,
            initializer_range=0.1)  # sharp enough attention that a wrong rotation shows far above 1e-4
ROPE = {
    "linear": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "rope_theta": 10000.0},
    "yarn_betas": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16, "beta_fast": 16.0,
                   "beta_slow": 2.0, "attention_factor": 1.3, "rope_theta": 500000.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "rope_theta": 500000.0},
}


def _hf_model(kind):
    torch.manual_seed(0)
    if kind == "mistral":
        return transformers.MistralForCausalLM(transformers.MistralConfig(**BASE, sliding_window=5))
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**BASE, rope_parameters=ROPE[kind]))


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def _import(hf_dir):
    with open(f"{hf_dir}/config.json") as f:
        hf = json.load(f)
    family, fields = model_fields_from_hf(hf)
    cfg = converted_config(fields, "t", "causal_lm", "config.json")
    return family, cfg, hf_to_params(family, read_hf_tensors(hf_dir), cfg.model)


@pytest.mark.parametrize("kind", [*ROPE, "mistral"])
def test_scaled_rope_and_windows_match_transformers_both_ways(kind, tmp_path):
    model = _hf_model(kind)
    model.save_pretrained(tmp_path / "hf")
    family, cfg, params = _import(tmp_path / "hf")
    m = cfg.model
    if kind == "mistral":
        assert (family, m.attention_window, m.rope_scaling) == ("mistral", 5, "none")
    else:
        assert m.rope_scaling == ROPE[kind]["rope_type"] and m.rope_factor == ROPE[kind]["factor"]
    ids = np.random.RandomState(0).randint(0, VOCAB, (2, 40))  # 2.5x the original 16 positions
    ours = np.asarray(jax.jit(build_model(m).apply)({"params": params}, ids))
    reference = _logits(model, ids)
    assert np.abs(reference).max() > 1e-2
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)

    out = tmp_path / "back"
    out.mkdir()
    from llm_jax.interop import safetensors_io
    back_family = family_of(m)
    safetensors_io.write_file(str(out / "model.safetensors"), params_to_hf(back_family, params, m))
    (out / "config.json").write_text(json.dumps(hf_config(m, back_family)))
    back = type(model).from_pretrained(out)
    np.testing.assert_allclose(_logits(back, ids), reference, atol=1e-5, rtol=0)


def test_unsupported_rope_types_are_named():
    hf = dict(BASE, model_type="llama", rope_parameters={"rope_type": "longrope", "rope_theta": 1e4})
    with pytest.raises(ConversionError, match="rope_type='longrope' is not supported"):
        model_fields_from_hf(hf)
    hf["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                             "mscale": 1.0, "mscale_all_dim": 1.0}
    with pytest.raises(ConversionError, match="mscale"):
        model_fields_from_hf(hf)
