import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax.parallel.mesh import make_mesh
from llm_jax.train.trainable import build_trainable

VARIANTS = {
    "learned": {}, "sinusoidal": {"positions": "sinusoidal"}, "rope": {"positions": "rope"},
    "nopos": {"positions": "none"}, "rmsnorm": {"norm": "rmsnorm"}, "post_ln": {"norm_position": "post"},
    "relu": {"ffn": "relu"}, "swiglu": {"ffn": "swiglu"}, "gqa": {"n_kv_heads": 2}, "mqa": {"n_kv_heads": 1},
    "untied_no_bias": {"tie_embeddings": False, "use_bias": False}, "dropout": {"dropout": 0.1},
    "bfloat16": {"dtype": "bfloat16"}, "float16_loss_scaling": {"dtype": "float16"}, "remat": {"remat": "full"},
}


def patterned_batch(batch=8, length=16, vocab=256, seed=0):
    """Sequences that repeat a short random motif: learnable in a few dozen steps."""
    rng = np.random.RandomState(seed)
    motifs = rng.randint(0, vocab, (batch, 4))
    windows = np.tile(motifs, (1, (length + 1) // 4 + 1))[:, : length + 1].astype(np.int32)
    return {"inputs": windows[:, :-1], "targets": windows[:, 1:], "segment_ids": np.ones((batch, length), np.int32)}


def setup(cfg):
    trainable = build_trainable(cfg, make_mesh(cfg, jax.devices()[:1]) if cfg.mesh.data == -1 else None)
    return trainable, trainable.init_state()


def run_steps(cfg, batches):
    trainable, state = setup(cfg)
    history = []
    with trainable.activate():
        for batch in batches:
            state, metrics = trainable.train_step(state, trainable.to_device(batch))
            history.append(jax.device_get(metrics))
    return state, history


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains(variant):
    cfg = small_config(**VARIANTS[variant])
    cfg.train.update(steps=30, warmup_steps=3, lr=1e-2, lr_min=1e-3)
    batch = patterned_batch()
    _, history = run_steps(cfg, [batch] * 30)
    losses = [float(m["loss"]) for m in history]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] - 1.5, f"{variant}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_gradient_accumulation_equals_one_big_batch():
    batch = patterned_batch(batch=8, seed=3)
    results = {}
    for micro in (1, 4):
        cfg = small_config()
        cfg.train.update(micro_batches=micro, steps=2)
        state, history = run_steps(cfg, [batch, batch])
        results[micro] = (state, history)
    (s1, h1), (s4, h4) = results[1], results[4]
    for a, b in zip(h1, h4):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_float16_overflow_skips_the_update_and_shrinks_the_scale_then_grows_it():
    cfg = small_config(dtype="float16")
    cfg.train.update(loss_scale_init=2.0**40, loss_scale_period=2, steps=60)  # 2^40 overflows float16 gradients
    trainable, state = setup(cfg)
    step_fn = trainable.train_step
    batch = trainable.to_device(patterned_batch())
    before = jax.device_get(state.params)
    with trainable.activate():
        state, m = step_fn(state, batch)
        assert int(m["skipped"]) == 1
        assert float(state.loss_scale) == 2.0**39
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params))):
            np.testing.assert_array_equal(a, b)  # no update applied
        scales = []
        for _ in range(45):
            state, m = step_fn(state, batch)
            scales.append(float(state.loss_scale))
    assert min(scales) <= 2.0**24  # it halved until gradients were finite ...
    assert scales[-1] > min(scales)  # ... and grew again after `loss_scale_period` finite steps
    assert float(m["skipped"]) in (0, 1) and np.isfinite(float(m["loss"]))


def test_same_seed_same_losses_bit_for_bit():
    cfg = small_config(dropout=0.1)
    batches = [patterned_batch(seed=s) for s in range(4)]
    _, h1 = run_steps(cfg, batches)
    _, h2 = run_steps(cfg, batches)
    assert [float(m["loss"]) for m in h1] == [float(m["loss"]) for m in h2]
