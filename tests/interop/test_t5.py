"""Hugging Face T5 parity: random tiny T5ForConditionalGeneration models (ReLU and gated-GELU) convert to the
encoder-decoder and back with float32 logits within 1e-4, padding masks included; T5's relative position buckets
equal transformers'."""

import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax.models import build_model
from llm_jax.models.positions import relative_position_bucket

torch = pytest.importorskip("torch", reason="the `hf` extra (transformers + CPU torch) is not installed")
transformers = pytest.importorskip("transformers", reason="the `hf` extra (transformers) is not installed")


@pytest.fixture(scope="module", params=["relu", "gated-gelu"])
def hf_t5(request, tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                   feed_forward_proj=request.param, dropout_rate=0.0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():  # non-trivial norm gains, so a swapped or dropped norm shows
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    path = str(tmp_path_factory.mktemp("t5"))
    model.save_pretrained(path)
    return model, path


def hf_logits(model, inputs, decoder_inputs, mask=None):
    with torch.no_grad():
        return model(input_ids=torch.tensor(inputs), decoder_input_ids=torch.tensor(decoder_inputs),
                     attention_mask=None if mask is None else torch.tensor(mask)).logits.numpy()


def test_t5_logits_match_hugging_face_within_1e_4_both_ways(hf_t5, tmp_path):
    from llm_jax.interop.t5 import load_hf_t5, save_hf_t5
    model, path = hf_t5
    cfg, params = load_hf_t5(path)
    ours = build_model(cfg.model)
    rng = np.random.RandomState(0)
    inputs, decoder_inputs = rng.randint(0, 96, (2, 30)), rng.randint(0, 96, (2, 12))  # buckets past max_distance
    mask = np.ones((2, 30), np.int64)
    mask[1, 22:] = 0  # the second row is padded: its padding must not change anything
    for m in (None, mask):
        reference = hf_logits(model, inputs, decoder_inputs, m)
        got = ours.apply({"params": params}, inputs, decoder_tokens_BT=decoder_inputs,
                         padding_BL=None if m is None else m.astype(bool))
        assert np.abs(reference).max() > 1e-2
        np.testing.assert_allclose(np.asarray(got), reference, atol=1e-4, rtol=0)
    save_hf_t5(cfg.model, params, str(tmp_path / "back"))
    back = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path / "back")).eval()
    np.testing.assert_allclose(hf_logits(back, inputs, decoder_inputs), hf_logits(model, inputs, decoder_inputs),
                               atol=1e-5, rtol=0)


def test_relative_buckets_equal_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention
    offsets = np.arange(-300, 300)[None, :] - np.zeros((1, 1), np.int64)
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20)):
            expected = T5Attention._relative_position_bucket(torch.tensor(offsets), bidirectional, buckets, distance)
            got = relative_position_bucket(jnp.asarray(offsets), bidirectional, buckets, distance)
            np.testing.assert_array_equal(np.asarray(got), expected.numpy())


