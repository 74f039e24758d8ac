"""The encoder-decoder family (T5) and span corruption: span-corrupted inputs and targets that rebuild the text,
parameter counts, causality and padding, and training (Hugging Face parity: tests/interop/test_t5.py)."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import REPO, small_config
from llm_jax.config import load_config, span_corruption_counts
from llm_jax.models import build_model
from llm_jax.models.accounting import param_count
from llm_jax.objectives.span_corruption import corrupt, noise_mask
from llm_jax.train.trainable import build_trainable

T5 = dict(family="encdec", positions="relative", norm="rmsnorm", use_bias=False, ffn="geglu", n_layers=2)


def tree_size(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


# ------------------------------------------------------------------------------------ span corruption


def test_span_corruption_inputs_and_targets_rebuild_the_text():
    L, V = 100, 1000
    tokens = jax.random.randint(jax.random.key(0), (8, L), 0, V - 20)
    inputs, targets = corrupt(jax.random.key(1), tokens, V)
    n, k = span_corruption_counts(L)
    assert (n, k) == (15, 5) and inputs.shape == (8, L - n + k) and targets.shape == (8, n + k)
    for row, (inp, tgt) in enumerate(zip(np.asarray(inputs), np.asarray(targets))):
        spans, current = {}, None  # sentinel -> the tokens that follow it in the targets
        for t in tgt:
            if t >= V - k:
                current = int(t)
                spans[current] = []
            else:
                spans[current].append(int(t))
        assert sorted(spans) == [V - 1 - i for i in reversed(range(k))]  # <extra_id_0> = V - 1, descending
        rebuilt = [x for t in inp for x in (spans[int(t)] if t >= V - k else [int(t)])]
        assert rebuilt == np.asarray(tokens[row]).tolist()


def test_noise_spans_have_the_configured_density_and_mean_length():
    masks = np.asarray(jax.vmap(lambda r: noise_mask(r, 512))(jax.random.split(jax.random.key(0), 2000)))
    n, k = span_corruption_counts(512)
    assert (masks.sum(1) == n).all()
    starts = (masks[:, 1:] & ~masks[:, :-1]).sum(1) + masks[:, 0]
    assert (starts == k).all() and not masks[:, 0].any()  # k spans; the window starts with kept text
    assert n / k == pytest.approx(3.0, rel=0.05)
    assert masks[:, -1].all()  # T5's segmentation alternates kept/noise spans and so ends with noise ...
    interior = masks.mean(0)[16:-32]  # ... but elsewhere noise is spread evenly, near the 0.15 density
    assert 0.1 < interior.min() and interior.max() < 0.2 and interior.mean() == pytest.approx(0.15, abs=0.02)


# ------------------------------------------------------------------------------------- model and training


@pytest.mark.parametrize("overrides", [{}, {"positions": "learned", "ffn": "relu", "tie_embeddings": False},
                                       {"positions": "rope", "norm_position": "post"}])
def test_param_count_matches_the_tree(overrides):
    cfg = small_config("span_corruption", **{**T5, **overrides})
    model = build_model(cfg.model)
    shapes = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))["params"], jax.random.key(0))
    assert param_count(cfg.model) == tree_size(nn.unbox(shapes))


@pytest.mark.parametrize("overrides, message", [
    ({"model.rel_buckets": "3"}, "at least 4 buckets"),
    ({"model.rel_max_distance": "8"}, "must exceed half of model.rel_buckets=32"),
    ({"model.family": "decoder", "train.objective": "causal_lm"}, "implemented by the encdec family only"),
])
def test_bad_relative_position_settings_are_one_clear_error(overrides, message):
    from llm_jax.config import ConfigError
    base = {"model.family": "encdec", "train.objective": "span_corruption", "model.positions": "relative"}
    with pytest.raises(ConfigError, match=message):
        load_config(None, {**base, **overrides}, n_devices=1)


def test_t5_small_has_the_published_parameter_count():
    cfg = load_config(os.path.join(REPO, "configs", "t5_small.py"))
    assert param_count(cfg.model) == 60_506_624  # transformers' T5ForConditionalGeneration (t5-small), tied


def test_the_decoder_is_causal_and_padding_is_ignored():
    cfg = small_config("span_corruption", **T5)
    model = build_model(cfg.model)
    enc = jax.random.randint(jax.random.key(0), (1, 16), 0, 200)
    dec = jax.random.randint(jax.random.key(1), (1, 10), 0, 200)
    params = model.init(jax.random.key(2), enc)["params"]
    base = model.apply({"params": params}, enc, decoder_tokens_BT=dec)
    changed = model.apply({"params": params}, enc, decoder_tokens_BT=dec.at[0, 6].set(7))
    np.testing.assert_allclose(changed[0, :6], base[0, :6], atol=1e-6)  # later decoder tokens never leak back
    padding = jnp.arange(16)[None] < 12
    a = model.apply({"params": params}, enc, decoder_tokens_BT=dec, padding_BL=padding)
    b = model.apply({"params": params}, enc.at[0, 12:].set(3), decoder_tokens_BT=dec, padding_BL=padding)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_span_corruption_trains():
    cfg = small_config("span_corruption", **T5, seq_len=32)
    cfg.train.update(batch_size=8, lr=1e-2)
    trainable = build_trainable(cfg)
    state = trainable.init_state()
    motifs = np.random.RandomState(0).randint(0, 200, (8, 4))
    tokens = np.tile(motifs, (1, 9))[:, :33].astype(np.int32)
    batch = trainable.to_device({"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                                 "segment_ids": np.ones((8, 32), np.int32)})
    losses = []
    with trainable.activate():
        for _ in range(40):
            state, metrics = trainable.train_step(state, batch)
            losses.append(float(metrics["loss"]))
        loss_sum, weight, _ = trainable.eval_step(state.params, batch)
    n, k = span_corruption_counts(32)
    assert float(weight) == 8 * (n + k)  # every target token (sentinels and spans) counts once
    assert losses[-1] < losses[0] - 2.0


def _pair_batch(rng, batch: int, length: int):
    """Reverse-a-sequence pairs of 3..length-1 ids in 3..99 (0 pads, 2 ends), as PairRows lays them out."""
    inputs, padding, targets = (np.zeros((batch, length), np.int32) for _ in range(3))
    weights = np.zeros((batch, length), np.float32)
    for b in range(batch):
        n = rng.randint(3, length)
        seq = rng.randint(3, 100, n)
        inputs[b, :n], padding[b, :n] = seq, 1
        targets[b, :n], targets[b, n] = seq[::-1], 2
        weights[b, : n + 1] = 1
    return {"encoder_inputs": inputs, "encoder_padding": padding, "decoder_targets": targets, "weights": weights}


def test_seq2seq_trains_and_ignores_padding():
    cfg = small_config("seq2seq", **T5, seq_len=12)
    cfg.train.update(batch_size=8, lr=1e-2)
    trainable = build_trainable(cfg)
    state = trainable.init_state()
    host = _pair_batch(np.random.RandomState(0), 8, 12)
    batch = trainable.to_device(host)
    padded = dict(host, encoder_inputs=np.where(host["encoder_padding"] > 0, host["encoder_inputs"], 77),
                  decoder_targets=np.where(host["weights"] > 0, host["decoder_targets"], 55))
    losses = []
    with trainable.activate():
        before = trainable.eval_step(state.params, batch)
        other = trainable.eval_step(state.params, trainable.to_device(padded))
        for _ in range(40):
            state, metrics = trainable.train_step(state, batch)
            losses.append(float(metrics["loss"]))
        after = trainable.eval_step(state.params, batch)
    # what fills the padding changes nothing: not the encoder's (masked), not the decoder's (after the EOS)
    np.testing.assert_allclose(float(before[0]), float(other[0]), rtol=1e-6)
    assert float(before[1]) == host["weights"].sum()  # every target id and its EOS, no padding
    assert losses[-1] < losses[0] - 2.0
    correct, count = after[2]["token_accuracy"]
    assert float(correct) / float(count) > 0.5
