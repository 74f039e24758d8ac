"""Objectives and trainable masks in the train step: the registry matches the schema, auxiliary losses that a
module sows are minimised and logged, and frozen parameters get no gradient, no optimizer state, no update."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import small_config
from llm_jax import config as config_lib
from llm_jax.errors import UserError
from llm_jax.objectives import OBJECTIVES, Objective, apply_with_aux
from llm_jax.train.step import _gradients, make_train_step
from llm_jax.train.state import TrainState, new_counters
from llm_jax.train.trainable import build_trainable


def test_the_objective_choices_are_the_registered_objectives():
    assert config_lib.CHOICES["train.objective"] == tuple(OBJECTIVES)


class Toy(nn.Module):
    """y = w x; sows 0.5 * |v|^2 into `losses` with a parameter the output does not use."""

    @nn.compact
    def __call__(self, x, deterministic=True):
        w = self.param("w", nn.initializers.ones, (2,))
        v = self.param("v", nn.initializers.ones, (2,))
        self.sow("losses", "toy_penalty", 0.5 * jnp.sum(v ** 2))
        return x * w


def toy_losses(model, params, batch, rng, deterministic):
    y, aux = apply_with_aux(model, params, batch["inputs"], rng=rng, deterministic=deterministic)
    losses = jnp.square(y - batch["targets"])
    return losses, jnp.ones_like(losses), aux


TOY = Objective("toy", ("inputs", "targets"), toy_losses)


def toy_state(tx, mask=None):
    params = Toy().init(jax.random.key(0), jnp.ones((1, 2)))["params"]
    trainable = params if mask is None else jax.tree.map(lambda p, k: p if k else None, params, mask)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(trainable), **new_counters(1.0))


def test_a_sown_auxiliary_loss_is_minimised_and_logged():
    cfg = small_config()
    tx = optax.sgd(0.1)
    step = jax.jit(make_train_step(Toy(), TOY, tx, lambda s: 0.1, cfg.train, False))
    batch = {"inputs": jnp.ones((4, 2)), "targets": jnp.ones((4, 2))}  # y = x already: only the penalty pulls
    state, metrics = step(toy_state(tx), batch)
    assert float(metrics["aux/toy_penalty"]) == pytest.approx(1.0)   # 0.5 * (1 + 1)
    np.testing.assert_allclose(state.params["v"], [0.9, 0.9], rtol=1e-6)  # v -= lr * v
    np.testing.assert_allclose(state.params["w"], [1.0, 1.0])


def test_frozen_parameters_get_no_gradient_no_optimizer_state_and_no_update():
    cfg = small_config()
    mask = {"v": False, "w": True}
    tx = optax.adam(0.1)
    state = toy_state(tx, mask)
    assert [x.shape for x in jax.tree.leaves(state.opt_state) if x.shape] == [(2,), (2,)]  # Adam mu, nu of w only
    batch = {"inputs": jnp.ones((4, 2)), "targets": 2 * jnp.ones((4, 2))}
    grads = jax.eval_shape(lambda s: _gradients(Toy(), TOY, s, batch, jax.random.key(0), 1, mask)[0], state)
    assert grads["v"] is None and grads["w"].shape == (2,)  # the frozen parameter is never differentiated
    step = jax.jit(make_train_step(Toy(), TOY, tx, lambda s: 0.1, cfg.train, False, mask))
    new, _ = step(state, batch)
    np.testing.assert_array_equal(new.params["v"], state.params["v"])
    assert not np.allclose(new.params["w"], state.params["w"])


def test_train_trainable_freezes_by_parameter_path():
    cfg = small_config()
    cfg.train.trainable = "layers/.*"
    trainable = build_trainable(cfg)
    state = trainable.init_state()
    assert trainable.mask["embed"]["embedding"] is False and trainable.mask["layers"]["mlp"]["wi"]["kernel"] is True
    tokens = np.random.RandomState(0).randint(0, 256, (8, 17)).astype(np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((8, 16), np.int32)}
    with trainable.activate():
        before = jax.device_get(state.params)
        state, metrics = trainable.train_step(state, trainable.to_device(batch))
    after = jax.device_get(state.params)
    np.testing.assert_array_equal(after["embed"]["embedding"], before["embed"]["embedding"])
    assert not np.allclose(after["layers"]["mlp"]["wi"]["kernel"], before["layers"]["mlp"]["wi"]["kernel"])
    assert np.isfinite(float(metrics["loss"]))


def test_a_trainable_pattern_that_matches_nothing_is_an_error():
    cfg = small_config()
    cfg.train.trainable = "lora_.*"
    with pytest.raises(ValueError, match="matches no parameter; paths look like"):
        build_trainable(cfg)


def test_a_loss_sown_inside_the_scanned_layer_stack_is_summed_over_layers(monkeypatch):
    """Collections pass through the layer scan: a block that sows 0.25 per layer adds n_layers * 0.25."""
    from llm_jax.models import transformer
    from llm_jax.objectives import CAUSAL_LM

    class SowingBlock(transformer.Block):
        @nn.compact
        def __call__(self, x_BLD, positions_BL, segments_BL):
            self.sow("losses", "per_layer", jnp.float32(0.25))
            return super().__call__(x_BLD, positions_BL, segments_BL)

    monkeypatch.setattr(transformer, "Block", SowingBlock)
    cfg = small_config(n_layers=3)
    trainable = build_trainable(cfg)
    tokens = np.zeros((8, 17), np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((8, 16), np.int32)}
    with trainable.activate():
        state = trainable.init_state()
        aux = jax.jit(lambda p, b: CAUSAL_LM.losses(trainable.model, p, b, None, True)[2])(
            state.params, trainable.to_device(batch))
        _, metrics = trainable.train_step(state, trainable.to_device(batch))
    assert float(aux.losses["per_layer"]) == pytest.approx(0.75) and float(metrics["aux/per_layer"]) == pytest.approx(0.75)


def test_the_documented_objective_example_runs_and_trains():
    """docs/core.md's twenty-line objective, executed as written: with no smoothing it is causal_lm's loss, and
    the train step minimises it."""
    import os
    import re
    from helpers import REPO
    from llm_jax.objectives.causal_lm import CAUSAL_LM
    text = open(os.path.join(REPO, "docs", "core.md")).read()
    code = re.search(r"```python\n(# llm_jax/objectives/smoothed_lm.py\n.*?)```", text, re.S).group(1)
    namespace = {}
    exec(compile(code, "docs/core.md", "exec"), namespace)
    objective = namespace["SMOOTHED_LM"]
    assert objective.name == "smoothed_lm" and len(code.splitlines()) <= 25
    trainable = build_trainable(small_config())
    state = trainable.init_state()
    motifs = np.random.RandomState(0).randint(0, 256, (8, 4))
    tokens = np.tile(motifs, (1, 5))[:, :17].astype(np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((8, 16), np.int32)}
    namespace["SMOOTHING"] = 0.0
    plain = objective.losses(trainable.model, state.params, batch, None, True)[0]
    np.testing.assert_allclose(plain, CAUSAL_LM.losses(trainable.model, state.params, batch, None, True)[0],
                               rtol=1e-5)
    namespace["SMOOTHING"] = 0.1
    step = jax.jit(make_train_step(trainable.model, objective, trainable.tx, trainable.schedule, trainable.cfg.train,
                                   False))
    losses = []
    for _ in range(20):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 1.0
    trained = objective.losses(trainable.model, state.params, batch, None, True)[0]
    namespace["SMOOTHING"] = 0.0  # a confident model pays for smoothing: the smoothed loss is the larger
    assert float(jnp.mean(trained)) > float(jnp.mean(objective.losses(trainable.model, state.params, batch, None,
                                                                      True)[0])) + 0.05


# every objective, with the shipped config that trains it (distill: the tiny one with a teacher named)
OBJECTIVE_CONFIGS = {"causal_lm": ("configs/tiny.py", {}), "mlm": ("configs/bert_tiny.py", {}),
                     "span_corruption": ("configs/t5_tiny.py", {}), "seq2seq": ("configs/t5_seq2seq_tiny.py", {}),
                     "sft": ("configs/sft_tiny.py", {}), "vlm": ("configs/vlm_tiny.py", {}),
                     "distill": ("configs/tiny.py", {"train.objective": "distill", "train.teacher": "runs/teacher"}),
                     "reward": ("configs/reward_tiny.py", {}), "dpo": ("configs/dpo_tiny.py", {}),
                     "grpo": ("configs/grpo_tiny.py", {}), "ppo": ("configs/ppo_tiny.py", {})}


def test_every_objective_has_a_shipped_config_here():
    assert set(OBJECTIVE_CONFIGS) == set(OBJECTIVES)


@pytest.mark.parametrize("name", sorted(OBJECTIVE_CONFIGS))
def test_the_abstract_batch_is_what_the_step_reads(name):
    """`llm-jax compile` lowers the step on `abstract_batch` alone: every field with its declared shape and dtype
    (images (B, S, S, 3) float32, the teacher's top-k (B, L, K), float weights...) must trace through the real step.
    That the loaders' real batches have these shapes is checked on every batch fed to training (to_device)."""
    path, overrides = OBJECTIVE_CONFIGS[name]
    cfg = config_lib.load_config(path, overrides)
    assert cfg.train.objective == name
    trainable = build_trainable(cfg)
    batch = trainable.abstract_batch()
    assert set(batch) == set(trainable.objective.batch_fields)
    with trainable.activate():
        lowered = trainable.train_step.lower(trainable.abstract, batch)
        trainable.eval_step.lower(trainable.abstract.params, batch)
    fed = jax.tree.leaves(lowered.args_info[0][1])
    assert sorted((a.shape, str(a.dtype)) for a in fed) == sorted((b.shape, str(b.dtype)) for b in batch.values())
    if name == "vlm":
        size = cfg.model.image_size
        assert batch["images"].shape == (cfg.train.batch_size, size, size, 3)
        assert batch["images"].dtype == np.float32 and batch["weights"].dtype == np.float32


def test_a_batch_field_of_the_wrong_shape_or_dtype_is_named():
    trainable = build_trainable(small_config("sft"))
    B, L = 8, trainable.cfg.model.seq_len
    good = {"inputs": np.zeros((B, L), np.int32), "targets": np.zeros((B, L), np.int32),
            "weights": np.ones((B, L), np.float32), "segment_ids": np.ones((B, L), np.int32),
            "positions": np.zeros((B, L), np.int32)}
    assert trainable.to_device(good)["weights"].dtype == np.float32
    with pytest.raises(UserError, match="batch field 'weights': int32 .*float32"):
        trainable.to_device(dict(good, weights=np.ones((B, L), np.int32)))
    with pytest.raises(UserError, match="batch field 'inputs'.*int32 \\(rows, 16\\)"):
        trainable.to_device(dict(good, inputs=np.zeros((B, L + 1), np.int32)))
