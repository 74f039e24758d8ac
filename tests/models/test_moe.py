"""Mixture of experts: routing paths agree, the auxiliary losses follow their formulas, a collapsed router is
penalised and drops tokens, parameter counts (total and active) match the tree, and an MoE model trains."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import REPO, run_cli, small_config
from llm_jax.config import ConfigError, load_config
from llm_jax.models import build_model
from llm_jax.models.accounting import active_params, flops_per_token, param_count
from llm_jax.models.moe import MoE, balance_loss, capacity, route, z_loss
from llm_jax.objectives import apply_with_aux, sown_losses
from llm_jax.train.trainable import build_trainable

MOE = dict(moe_experts=4, moe_top_k=2, ffn="swiglu", d_ff=64, positions="rope", norm="rmsnorm", use_bias=False)


def model_and_params(**overrides):
    cfg = small_config(**{**MOE, **overrides})
    model = build_model(cfg.model)
    tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, 256)
    params = nn.unbox(model.init(jax.random.key(0), tokens)["params"])
    return cfg, model, params, tokens


def test_capacity_at_e_over_k_drops_nothing_and_equals_the_dropless_path():
    _, dropless, params, tokens = model_and_params()
    cfg, capped, _, _ = model_and_params(moe_capacity_factor=2.0)  # E / top_k = 4 / 2
    assert capacity(build_model(cfg.model).cfg, 16) == 16            # room for every token of a sequence
    loss = lambda model: lambda p: jnp.mean(apply_with_aux(model, p, tokens)[0] ** 2)  # noqa: E731
    out_a, sown_a = apply_with_aux(dropless, params, tokens)
    out_b, sown_b = apply_with_aux(capped, params, tokens)
    np.testing.assert_allclose(out_a, out_b, atol=1e-5, rtol=0)
    assert float(sown_b.stats["moe_dropped"]) == 0.0
    grads_a, grads_b = jax.grad(loss(dropless))(params), jax.grad(loss(capped))(params)
    for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert float(jnp.abs(grads_a["layers"]["moe"]["wi"]).sum()) > 0  # experts receive gradients


def test_a_small_capacity_drops_the_overflow_and_changes_the_output():
    _, dropless, params, tokens = model_and_params()
    _, capped, _, _ = model_and_params(moe_capacity_factor=0.5)  # C = ceil(0.5 * 2 * 16 / 4) = 4 of 32 slots/seq
    out_a, _ = apply_with_aux(dropless, params, tokens)
    out_b, sown = apply_with_aux(capped, params, tokens)
    assert float(sown.stats["moe_dropped"]) == pytest.approx(0.5)  # 4 experts x 4 slots = 16 of 32 assignments
    assert float(jnp.abs(out_a - out_b).max()) > 1e-3


def test_balancing_loss_equals_its_formula_on_a_hand_computed_router():
    # 4 tokens, 2 experts, top-1: probabilities by hand, so f = (3/4, 1/4) and P = mean of the rows.
    probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    experts = jnp.array([[0], [0], [0], [1]])
    loss, fraction = balance_loss(probs, experts, 2)
    p = (np.array([0.9, 0.1]) + [0.8, 0.2] + [0.6, 0.4] + [0.3, 0.7]) / 4
    assert float(loss) == pytest.approx(2 * (0.75 * p[0] + 0.25 * p[1]))
    np.testing.assert_allclose(fraction, [0.75, 0.25])
    uniform, _ = balance_loss(jnp.full((4, 2), 0.5), jnp.array([[0], [1], [0], [1]]), 2)
    assert float(uniform) == pytest.approx(1.0)  # perfectly balanced
    logits = jnp.array([[1.0, 2.0], [0.0, 0.0]])
    expected = (np.log(np.e + np.e ** 2) ** 2 + np.log(2.0) ** 2) / 2  # mean over tokens of logsumexp^2
    assert float(z_loss(logits)) == pytest.approx(expected, rel=1e-6)


def test_router_top_k_weights_are_normalised_and_sigmoid_scores_work():
    cfg = small_config(**MOE, moe_router="sigmoid", moe_norm_topk=True)
    view = build_model(cfg.model).cfg
    weights, experts, probs = route(jnp.array([[2.0, -1.0, 0.5, 0.0]]), view)
    assert experts.tolist() == [[0, 2]]
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs, jax.nn.sigmoid(jnp.array([[2.0, -1.0, 0.5, 0.0]])), rtol=1e-6)


def test_a_router_forced_to_one_expert_raises_the_balancing_loss_and_drops_tokens():
    view = build_model(small_config(**MOE, moe_capacity_factor=1.0).model).cfg
    layer = MoE(view)
    x = jnp.abs(jax.random.normal(jax.random.key(2), (4, 16, view.d_model)))  # positive inputs, so ...
    params = nn.unbox(layer.init(jax.random.key(0), x)["params"])
    forced = dict(params, router=jnp.zeros_like(params["router"]).at[:, 0].set(1.0))  # ... expert 0 always wins

    def run(p):
        _, sown = layer.apply({"params": p}, x, mutable=["losses", "stats"])
        return sown_losses(sown["losses"]), {k: float(v[0]) for k, v in sown["stats"].items()}
    (balanced, balanced_stats), (collapsed, collapsed_stats) = run(params), run(forced)
    w = view.moe_balance_weight
    assert float(balanced["moe_balance"]) == pytest.approx(w, rel=0.2)  # near 1 x weight at random init
    assert float(collapsed["moe_balance"]) > 1.8 * w  # f_0 = 1/2 (every token's first choice), P_0 near 1
    assert collapsed_stats["moe_expert_share_max"] == pytest.approx(0.5)
    # expert 0 keeps C = 8 of the 16 first choices per sequence: at least 8 of 32 assignments dropped
    assert collapsed_stats["moe_dropped"] >= 0.25
    assert collapsed_stats["moe_dropped"] > balanced_stats["moe_dropped"] + 0.1


def test_every_kth_layer_is_moe_and_counts_match_the_tree():
    cfg, model, params, _ = model_and_params(n_layers=4, moe_every=2, moe_shared_experts=1, moe_d_ff=32)
    group = params["layers"]
    assert set(group) == {"block_0", "block_1"} and "mlp" in group["block_0"] and "moe" in group["block_1"]
    assert group["block_1"]["moe"]["wi"].shape == (2, 2, 4, 32, 32)  # (groups, gate|up, experts, d, f)
    assert "shared" in group["block_1"]["moe"]
    assert param_count(cfg.model) == sum(x.size for x in jax.tree.leaves(params))


def test_mixtral_8x7b_totals_match_the_tree_without_allocating():
    cfg = load_config(os.path.join(REPO, "configs", "mixtral_8x7b.py"))
    model = build_model(cfg.model)
    shapes = jax.eval_shape(lambda r: nn.unbox(model.init(r, jnp.zeros((1, 8), jnp.int32))["params"]),
                            jax.random.key(0))
    total = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes))
    moe = shapes["layers"]["moe"]
    per_expert = (moe["wi"].size + moe["wo"].size) // 8
    assert total == param_count(cfg.model) == 46_702_792_704
    assert active_params(cfg.model) == total - 6 * per_expert == 12_879_925_248  # 2 of 8 experts per token
    dense_equivalent = dict(cfg.model, moe_experts=0, d_ff=2 * 14336)  # top-2 x 14336 = one 28672-wide FFN
    assert flops_per_token(cfg.model) == pytest.approx(flops_per_token(dense_equivalent) + 6 * 32 * 4096 * 8)


def test_estimate_reports_total_and_active_parameters():
    proc = run_cli("estimate", "--config", os.path.join(REPO, "configs", "moe_tiny.py"), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["params"], out["active_params"]) == (10_043_904, 3_752_448)


@pytest.mark.parametrize("overrides, message", [
    ({"model.moe_experts": "4", "model.moe_top_k": "5"}, "moe_top_k=5"),
    ({"model.moe_experts": "4", "model.moe_every": "3"}, "moe_every=3: must divide model.n_layers=4"),
    ({"model.moe_experts": "1"}, "moe_experts=1"),
    ({"model.moe_experts": "4", "model.moe_top_k": "1"}, "gate of exactly 1, so the loss never trains the router"),
    ({"model.moe_experts": "3", "mesh.expert": "2"}, "mesh.expert=2 .* must divide model.moe_experts=3"),
    ({"model.moe_experts": "4", "model.mup": "true"}, "muP's width scaling is implemented for the dense decoder"),
    ({"model.moe_experts": "4", "mesh.stage": "2", "model.n_layers": "4"}, "pipeline parallelism"),
])
def test_bad_moe_settings_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides, n_devices=2)


def test_an_moe_model_trains_and_logs_its_routing():
    cfg = small_config(**MOE)
    cfg.train.update(batch_size=8, lr=1e-2)
    trainable = build_trainable(cfg)
    state = trainable.init_state()
    rng = np.random.RandomState(0)
    motifs = rng.randint(0, 256, (8, 4))
    tokens = np.tile(motifs, (1, 5))[:, :17].astype(np.int32)
    batch = trainable.to_device({"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                                 "segment_ids": np.ones((8, 16), np.int32)})
    losses = []
    with trainable.activate():
        for _ in range(30):
            state, metrics = trainable.train_step(state, batch)
            losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 1.0
    assert {"aux/moe_balance", "aux/moe_z", "stats/moe_expert_share_min", "stats/moe_expert_share_max",
            "stats/moe_dropped"} <= set(metrics)
    assert 0 < float(metrics["stats/moe_expert_share_min"]) <= 0.25 <= float(metrics["stats/moe_expert_share_max"])
    assert float(metrics["aux/moe_balance"]) >= 0.9 * cfg.model.moe_balance_weight  # E * sum f p >= ~1
