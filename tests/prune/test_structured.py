"""Structured pruning (llm_jax/prune/structured.py): the smaller model computes exactly the original with the
removed heads', neurons' or layers' output weights zeroed; the command writes a loadable smaller work directory."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from helpers import small_config
from llm_jax import config as config_lib
from llm_jax.models import build_model
from llm_jax.prune.structured import keep_heads, keep_layers, keep_neurons, prune_structured
from llm_jax.train.state import init_params

IDS = np.random.default_rng(0).integers(0, 256, (2, 16))


def setup(**model):
    cfg = small_config(**model)
    params = jax.device_get(nn.unbox(init_params(build_model(cfg.model), 16, jax.random.key(0))))
    params = jax.tree.map(lambda x: x + 0.05 * np.random.default_rng(1).normal(size=x.shape).astype(x.dtype), params)
    return cfg, params


def logits(cfg, params, **changed):
    model_cfg = config_lib.config_from_json(config_lib.to_json(cfg)).model
    model_cfg.update(changed)
    return np.asarray(build_model(model_cfg).apply({"params": params}, IDS))


def zeroed(params, where):
    out = jax.tree.map(np.array, params)
    for path, index in where:
        node = out
        for key in path[:-1]:
            node = node[key]
        node[path[-1]][index] = 0
    return out


@pytest.mark.parametrize("model", [dict(n_heads=4, n_kv_heads=2, ffn="swiglu", positions="rope", norm="rmsnorm"),
                                   dict(n_heads=4)])
def test_heads_and_neurons(model):
    cfg, params = setup(**model)
    m = dict(cfg.model)
    kept_kv = keep_heads(params, m, 0.5)
    G = m["n_heads"] // m["n_kv_heads"]
    smaller, changed = prune_structured(params, m, "heads", 0.5)
    assert changed == {"n_heads": m["n_heads"] // 2, "n_kv_heads": m["n_kv_heads"] // 2}
    drops = [((("layers", "attention", "out", "kernel")), (layer, q))
             for layer in range(m["n_layers"]) for q in range(m["n_heads"]) if q // G not in kept_kv[layer]]
    np.testing.assert_allclose(logits(cfg, smaller, **changed), logits(cfg, zeroed(params, drops)), atol=2e-5)

    kept = keep_neurons(params, m, 0.25)
    smaller, changed = prune_structured(params, m, "neurons", 0.25)
    assert changed == {"d_ff": m["d_ff"] - m["d_ff"] // 4} and kept.shape == (m["n_layers"], changed["d_ff"])
    drops = [(("layers", "mlp", "wo", "kernel"), (layer, j)) for layer in range(m["n_layers"])
             for j in range(m["d_ff"]) if j not in kept[layer]]
    np.testing.assert_allclose(logits(cfg, smaller, **changed), logits(cfg, zeroed(params, drops)), atol=2e-5)


def test_layers_and_the_command(trained, tmp_path):
    from llm_jax.infer.load import load_workdir
    from llm_jax.prune.command import PruneError, prune_workdir
    cfg, params = setup(n_layers=3)
    kept = keep_layers(params, dict(cfg.model), 1)
    (dropped,) = sorted(set(range(3)) - set(kept))
    smaller, changed = prune_structured(params, dict(cfg.model), "layers", count=1)
    drops = [(("layers", sub, name, part), dropped) for sub, name in (("attention", "out"), ("mlp", "wo"))
             for part in ("kernel", "bias")]
    np.testing.assert_allclose(logits(cfg, smaller, **changed), logits(cfg, zeroed(params, drops)), atol=2e-5)
    with pytest.raises(ValueError, match="pre-LN"):
        keep_layers(params, dict(cfg.model, norm_position="post"), 1)

    _, base = trained
    info = prune_workdir(base, str(tmp_path / "heads"), "heads", fraction=0.5)
    pruned = load_workdir(str(tmp_path / "heads"))
    assert pruned.cfg.model.n_heads == 2 and info["params"] < info["params_before"]
    assert info["params"] == sum(x.size for x in jax.tree.leaves(pruned.params))
    with pytest.raises(PruneError, match="remove at least one"):
        prune_workdir(base, str(tmp_path / "none"), "neurons", fraction=0.001)
