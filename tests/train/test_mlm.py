"""The MLM objective: BERT's 15% / 80-10-10 masking of real tokens (statistics within sampling error), masking
inside the jitted step (per-step randomness, a fixed key in evaluation, normalised over the whole batch whatever
the gradient accumulation), a tiny encoder that learns, and a real training run that reports MLM accuracy."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llm_jax import config as config_lib
from llm_jax.data.pipeline import tokenizer_vocab_size
from llm_jax.objectives import OBJECTIVES
from llm_jax.objectives.mlm import MLM, mask_tokens, mlm_prepare
from llm_jax.train.trainable import build_trainable


def encoder_config(**model):
    cfg = config_lib.default_config()
    cfg.model.update(dict(dict(family="encoder", vocab_size=64, seq_len=32, d_model=32, n_layers=2, n_heads=4,
                               norm_position="post", type_vocab_size=2), **model))
    cfg.train.update(objective="mlm", steps=30, batch_size=16, warmup_steps=3, lr=1e-2, lr_min=1e-3,
                     eval_every=10, eval_batches=2, log_every=5)
    cfg.checkpoint.every = 0
    cfg = config_lib.resolve(cfg)
    config_lib.validate(cfg)
    return cfg


def motif_batch(step, B=16, L=32, vocab=63):
    """Rows repeating a random 4-token motif: each masked token is visible elsewhere in its row."""
    motifs = np.random.RandomState(step % 5).randint(0, vocab, (B, 4))
    tokens = np.tile(motifs, (1, L // 4 + 1))[:, : L + 1].astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((B, L), np.int32)}


def one_token_rows(step, B=32, L=32, vocab=15):
    """Each row repeats one random token: a masked token is visible at every other position of its row."""
    tokens = np.repeat(np.random.RandomState(step).randint(0, vocab, (B, 1)), L + 1, axis=1).astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((B, L), np.int32)}


def test_mlm_is_registered_and_a_choice():
    assert OBJECTIVES["mlm"] is MLM and "mlm" in config_lib.CHOICES["train.objective"]


def test_masking_statistics_are_15_80_10_10_within_sampling_error():
    V, mask_id, shape = 1000, 999, (400, 500)
    tokens = jax.random.randint(jax.random.key(1), shape, 0, V - 1)
    real = jnp.arange(shape[1])[None, :] < 400  # the last 100 positions of every row are padding
    corrupted, chosen = jax.device_get(mask_tokens(jax.random.key(2), tokens, real, V, mask_id))
    tokens, real = np.asarray(tokens), np.asarray(real & np.ones(shape, bool))

    def within(count, n, p):  # 5 standard deviations of a binomial count
        assert abs(count - n * p) < 5 * np.sqrt(n * p * (1 - p)), (count, n, p)

    n_real = int(real.sum())
    within(int(chosen.sum()), n_real, 0.15)
    assert not chosen[~real].any() and (corrupted[~chosen] == tokens[~chosen]).all()  # nothing else touched
    n = int(chosen.sum())
    masked = corrupted[chosen] == mask_id
    kept = corrupted[chosen] == tokens[chosen]
    random = ~masked & ~kept
    within(int(masked.sum()), n, 0.8)
    within(int(kept.sum()), n, 0.1 + 0.1 / V)  # a random token equals the original 1 time in V
    within(int(random.sum()), n, 0.1 * (1 - 1 / V))
    assert np.unique(corrupted[chosen][random]).size > 0.9 * (V - 1)  # random replacements span the vocabulary


def test_masking_is_fresh_each_step_and_fixed_in_evaluation():
    cfg = encoder_config()
    trainable = build_trainable(cfg)
    batch = jax.tree.map(jnp.asarray, motif_batch(0))
    prepare = jax.jit(lambda b, r: mlm_prepare(trainable.model, b, r)["weights"])
    evaluation = jax.jit(lambda b: mlm_prepare(trainable.model, b, None)["weights"])
    np.testing.assert_array_equal(evaluation(batch), evaluation(batch))
    step0, step1 = (prepare(batch, jax.random.fold_in(jax.random.key(1), s)) for s in (0, 1))
    assert not np.array_equal(step0, step1)
    padded = dict(batch, segment_ids=batch["segment_ids"].at[:, 20:].set(0))  # segment id 0 = padding
    assert not np.asarray(evaluation(padded))[:, 20:].any()


def test_the_loss_is_the_mean_over_masked_tokens_of_the_whole_batch_whatever_the_accumulation():
    losses = {}
    for micro in (1, 4):
        cfg = encoder_config()
        cfg.train.micro_batches = micro
        trainable = build_trainable(cfg)
        with trainable.activate():
            state = trainable.init_state()
            _, metrics = trainable.train_step(state, trainable.to_device(motif_batch(0)))
        losses[micro] = float(metrics["loss"])
    assert losses[1] == pytest.approx(losses[4], abs=1e-5)
    assert losses[1] == pytest.approx(np.log(64), abs=0.5)  # ~uniform at init: a mean per masked token


def test_a_tiny_encoder_learns_with_mlm_in_30_steps():
    cfg = encoder_config(vocab_size=16)  # 15 tokens + [MASK]
    cfg.train.batch_size = 32
    trainable = build_trainable(cfg)
    losses, correct, count = [], 0.0, 0.0
    with trainable.activate():
        state = trainable.init_state()
        for step in range(30):
            state, metrics = trainable.train_step(state, trainable.to_device(one_token_rows(step)))
            losses.append(float(metrics["loss"]))
        for i in range(4):  # held-out rows
            _, weight, extra = trainable.eval_step(state.params, trainable.to_device(one_token_rows(1000 + i)))
            assert float(extra["mlm_accuracy"][1]) == float(weight) > 0
            correct, count = correct + float(extra["mlm_accuracy"][0]), count + float(weight)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.7, losses  # from ln 16 = 2.77 (seen: ~1.0 lower)
    assert correct / count > 0.3  # chance is 1/15 (seen: 0.57 and 0.75 for two seeds)


def test_mlm_reserves_the_last_id_for_mask_only_when_asked():
    cfg = encoder_config()
    assert tokenizer_vocab_size(cfg) == 63 and build_trainable(cfg).model.cfg.mask_id == 63
    cfg.model.mask_token_id = 5
    assert tokenizer_vocab_size(cfg) == 64


def test_training_reports_held_out_mlm_accuracy(small_corpus, tmp_path):
    from llm_jax.train.loop import train
    from llm_jax.train.metrics import read_metrics
    cfg = encoder_config(vocab_size=384, seq_len=32)
    cfg.data.corpus = small_corpus
    cfg.train.update(steps=20, lr=3e-3)
    logs = []
    summary = train(cfg, str(tmp_path), log=logs.append)
    records = read_metrics(str(tmp_path))
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 10, 20] and all("eval_mlm_accuracy" in r for r in evals)
    assert 0 <= summary["eval_mlm_accuracy"] <= 1 and summary["eval_loss"] < evals[0]["eval_loss"]
    assert "mlm_accuracy" in logs[-1] and any("mlm_accuracy" in line for line in logs if line.startswith("step 10/"))
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["train"]["objective"] == "mlm"
