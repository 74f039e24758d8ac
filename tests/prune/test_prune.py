"""Pruning (llm_jax/prune/): the masks each method makes, the pruned work directory computing exactly the model with
those weights zeroed, and masks that keep pruned weights at zero through recovery fine-tuning."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from helpers import comparison_sft_file, sft_overrides, small_config
from llm_jax import config as config_lib
from llm_jax.models import build_model
from llm_jax.models.accounting import param_count
from llm_jax.prune.command import PruneError, prune_workdir
from llm_jax.prune.methods import magnitude_mask, nm_mask
from llm_jax.train.state import init_params
from llm_jax.train.trainable import build_trainable


def test_magnitude_keeps_the_largest_weights():
    w = np.random.default_rng(0).normal(size=(32, 24))
    mask = magnitude_mask(w, 0.75)
    assert mask.sum() == 32 * 24 // 4
    assert np.abs(w[mask == 1]).min() > np.abs(w[mask == 0]).max()


def test_n_m_keeps_n_of_every_m_consecutive_inputs():
    w = np.random.default_rng(1).normal(size=(16, 5))
    mask = nm_mask(w, 2, 4)
    groups = mask.reshape(4, 4, 5)
    assert (groups.sum(axis=1) == 2).all()
    magnitudes = np.abs(w).reshape(4, 4, 5)
    assert ((magnitudes * groups).max(1) >= (magnitudes * (1 - groups)).max(1)).all()  # the kept are the larger
    assert (np.sort(np.where(groups == 1, magnitudes, np.inf), 1)[:, 0] >=
            np.sort(np.where(groups == 0, magnitudes, -np.inf), 1)[:, -1]).all()
    with pytest.raises(ValueError, match="multiple of m=4"):
        nm_mask(np.ones((6, 2)), 2, 4)


def test_pruned_work_directory_equals_the_zeroed_model_and_masks_survive_training(trained, tmp_path):
    from llm_jax.infer.load import load_workdir
    from llm_jax.train.loop import train
    _, base = trained
    info = prune_workdir(base, str(tmp_path / "nm"), "nm", n=2, m=4)
    assert info["sparsity"] == 0.5 and set(info["kept_by_projection"].values()) == {0.5}
    pruned, dense = load_workdir(str(tmp_path / "nm")), load_workdir(base)
    assert pruned.cfg.model.prune_masks and param_count(pruned.cfg.model) == sum(
        x.size for x in jax.tree.leaves(pruned.params))
    zeroed = jax.tree.map(lambda x: x, jax.device_get(dense.params))
    masks = {}
    for module in ("query", "key", "value", "out"):
        mask = np.asarray(pruned.params["layers"]["attention"][module]["kernel_mask"])
        zeroed["layers"]["attention"][module]["kernel"] = zeroed["layers"]["attention"][module]["kernel"] * mask
        masks[module] = mask
    for module in ("wi", "wo"):
        mask = np.asarray(pruned.params["layers"]["mlp"][module]["kernel_mask"])
        zeroed["layers"]["mlp"][module]["kernel"] = zeroed["layers"]["mlp"][module]["kernel"] * mask
    ids = np.random.default_rng(0).integers(0, 300, (2, 16))
    np.testing.assert_allclose(np.asarray(pruned.model.apply({"params": pruned.params}, ids)),
                               np.asarray(dense.model.apply({"params": zeroed}, ids)), atol=1e-5)

    # recovery fine-tuning: masks are not trained and the pruned weights stay zero in what the model computes
    cfg = config_lib.load_config(str(tmp_path / "nm" / "config.json"),
                                 sft_overrides(str(tmp_path / "nm"), comparison_sft_file(tmp_path / "sft.jsonl"),
                                               **{"train.steps": 10, "train.lr": 1e-2}))
    assert build_trainable(cfg).sizes()["trainable"] == param_count(cfg.model) - info["projection_weights"]
    train(cfg, str(tmp_path / "recovered"), log=lambda _: None)
    after = load_workdir(str(tmp_path / "recovered"))
    attention = after.params["layers"]["attention"]
    for module, mask in masks.items():
        np.testing.assert_array_equal(np.asarray(attention[module]["kernel_mask"]), mask)
        effective = np.asarray(attention[module]["kernel"]) * mask
        assert (effective[mask == 0] == 0).all()
    assert not np.array_equal(np.asarray(attention["query"]["kernel"]) * masks["query"],
                              np.asarray(pruned.params["layers"]["attention"]["query"]["kernel"]))  # it trained
    with pytest.raises(PruneError, match="prune a dense, unquantized model"):
        prune_workdir(str(tmp_path / "nm"), str(tmp_path / "again"), "magnitude", 0.5)
    with pytest.raises(PruneError, match="exists and is not empty"):
        prune_workdir(base, str(tmp_path / "nm"), "magnitude", 0.5)


def test_prune_masks_model_shape():
    cfg = small_config(prune_masks=True)
    params = nn.unbox(init_params(build_model(cfg.model), 16, jax.random.key(0)))
    assert params["layers"]["attention"]["out"]["kernel_mask"].shape == (2, 4, 8, 32)
    assert params["layers"]["attention"]["out"]["kernel_mask"].dtype == np.int8
    assert "kernel_mask" not in params.get("embed", {})
    assert param_count(cfg.model) == sum(x.size for x in jax.tree.leaves(params))
    json.dumps(config_lib.to_json(cfg))
