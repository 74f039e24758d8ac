import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax.train.optimizer import decay_mask, make_optimizer, schedule


def lr_at(cfg, step):
    return float(schedule(cfg.train)(step))


def sched_cfg(kind, **kw):
    cfg = small_config()
    cfg.train.update(dict(dict(schedule=kind, lr=1.0, lr_min=0.1, warmup_steps=10, steps=110), **kw))
    return cfg


def test_linear_warmup_then_cosine_to_lr_min():
    cfg = sched_cfg("cosine")
    np.testing.assert_allclose([lr_at(cfg, s) for s in (0, 4, 9)], [0.1, 0.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(lr_at(cfg, 10), 1.0, rtol=1e-6)
    np.testing.assert_allclose(lr_at(cfg, 60), 0.1 + 0.45 * (1 + np.cos(np.pi * 0.5)), rtol=1e-6)
    np.testing.assert_allclose(lr_at(cfg, 110), 0.1, rtol=1e-6)


def test_inverse_square_root_peaks_at_warmup_and_decays_as_t_to_minus_half():
    cfg = sched_cfg("inverse_sqrt")
    np.testing.assert_allclose(lr_at(cfg, 9), 1.0, rtol=1e-6)  # t = 10 = warmup
    np.testing.assert_allclose(lr_at(cfg, 39), 0.5, rtol=1e-6)  # t = 40: sqrt(10/40)
    assert lr_at(cfg, 4) == pytest.approx(0.5)  # warmup part: t * w^-1.5 * sqrt(w) = t / w


def test_warmup_stable_decay():
    cfg = sched_cfg("wsd", wsd_decay_fraction=0.2)  # decay over the last 22 steps
    assert lr_at(cfg, 50) == pytest.approx(1.0) and lr_at(cfg, 88) == pytest.approx(1.0)
    assert lr_at(cfg, 99) == pytest.approx(1.0 + (0.1 - 1.0) * 11 / 22)
    assert lr_at(cfg, 110) == pytest.approx(0.1)


def test_constant_after_warmup():
    cfg = sched_cfg("constant")
    assert lr_at(cfg, 10) == lr_at(cfg, 100) == pytest.approx(1.0)


def test_weight_decay_skips_norms_and_biases():
    params = {"layers": {"norm_attention": {"scale": 1.0, "bias": 1.0}, "mlp": {"wi": {"kernel": 1.0, "bias": 1.0}}},
              "embed": {"embedding": 1.0}}
    mask = decay_mask(params)
    assert mask["layers"]["mlp"]["wi"] == {"kernel": True, "bias": False}
    assert mask["layers"]["norm_attention"] == {"scale": False, "bias": False}
    assert mask["embed"]["embedding"] is True


def test_adamw_decays_only_masked_weights():
    cfg = small_config()
    cfg.train.update(weight_decay=0.5, lr=0.1, lr_min=0.1, warmup_steps=0, grad_clip=1.0, schedule="constant")
    tx = make_optimizer(cfg.train)
    params = {"w": {"kernel": jnp.ones(3)}, "n": {"scale": jnp.ones(3)}}
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    np.testing.assert_allclose(updates["w"]["kernel"], -0.1 * 0.5 * np.ones(3), rtol=1e-6)
    np.testing.assert_allclose(updates["n"]["scale"], np.zeros(3))
