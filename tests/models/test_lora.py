"""LoRA (llm_jax/models/lora.py): step 0 is the base model, only the adapters train (no optimizer state for the
frozen base), merge / unmerge round-trip with the logits, target patterns, and LoRA fine-tuning of a trained run."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import comparison_sft_file, sft_overrides, small_config

from llm_jax import config as config_lib
from llm_jax.models import build_model, lora, peft
from llm_jax.models.accounting import param_count
from llm_jax.train.optimizer import param_path
from llm_jax.train.state import init_params
from llm_jax.train.trainable import build_trainable


def models(**lora_fields):
    base_cfg = small_config(positions="rope", ffn="swiglu", use_bias=False)
    cfg = small_config(positions="rope", ffn="swiglu", use_bias=False, peft="lora", lora_rank=4, **lora_fields)
    base, adapted = build_model(base_cfg.model, base_cfg.mesh), build_model(cfg.model, cfg.mesh)
    base_params = nn.unbox(init_params(base, 16, jax.random.key(0)))
    _, adapters = peft.split(nn.unbox(init_params(adapted, 16, jax.random.key(1))))
    return cfg, base, adapted, base_params, adapters


TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 16)), jnp.int32)


def logits(model, params):
    return np.asarray(model.apply({"params": params}, TOKENS))


def test_step_0_is_the_base_model_and_every_projection_is_targeted_by_default():
    cfg, base, adapted, base_params, adapters = models()
    paths = sorted(param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(adapters)[0])
    projections = (("attention", ("key", "out", "query", "value")), ("mlp", ("wi_gate", "wi_up", "wo")))
    expected = [f"layers/{m}/{p}/lora_{x}" for m, ps in projections for p in ps for x in "ab"]
    assert paths == sorted(expected)
    a = adapters["layers"]["attention"]["out"]["lora_a"]
    assert a.shape == (2, 4 * 8, 4)  # (layers, heads x head_dim flattened, rank)
    assert float(jnp.std(a)) == pytest.approx(1 / 4, rel=0.1)  # A ~ N(0, (1/r)^2), B = 0
    assert all(float(jnp.abs(b).max()) == 0 for p, b in jax.tree_util.tree_flatten_with_path(adapters)[0]
               if param_path(p).endswith("lora_b"))
    np.testing.assert_array_equal(logits(adapted, peft.join(base_params, adapters)), logits(base, base_params))


def test_target_pattern_selects_projections():
    *_, adapters = models(lora_targets="attention/(query|value)$")
    assert sorted(adapters["layers"]) == ["attention"] and sorted(adapters["layers"]["attention"]) == ["query", "value"]


def test_merge_and_unmerge_round_trip_through_the_logits():
    cfg, base, adapted, base_params, adapters = models()
    rng = iter(jax.random.split(jax.random.key(2), 100))
    adapters = jax.tree.map(lambda x: 0.05 * jax.random.normal(next(rng), x.shape), adapters)  # a trained B != 0
    params = peft.join(base_params, adapters)
    with_adapters = logits(adapted, params)
    assert np.abs(with_adapters - logits(base, base_params)).max() > 1e-3  # the adapters change the model
    merged = lora.merge(params, cfg.model)
    assert not peft.split(merged)[1]
    np.testing.assert_allclose(logits(base, merged), with_adapters, atol=2e-5)  # a plain model of the same shape
    back = lora.unmerge(merged, adapters, cfg.model)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), back, params)


def test_only_the_adapters_train_and_have_optimizer_state():
    cfg = small_config(peft="lora", lora_rank=2)
    trainable = build_trainable(cfg)
    state = trainable.init_state()
    n_adapters = len(jax.tree.leaves(peft.split(state.params)[1]))
    opt_leaves = [x for x in jax.tree.leaves(state.opt_state) if getattr(x, "ndim", 0) > 0]
    assert len(opt_leaves) == 2 * n_adapters  # Adam's two moments, for the adapters only
    batch = {k: np.asarray(np.random.default_rng(0).integers(0, 256, (8, 16)), np.int32)
             for k in ("inputs", "targets")} | {"segment_ids": np.zeros((8, 16), np.int32)}
    before = jax.device_get(state.params)
    with trainable.activate():
        state, _ = trainable.train_step(state, trainable.to_device(batch))
    after = jax.device_get(state.params)
    base_before, adapters_before = peft.split(before)
    base_after, adapters_after = peft.split(after)
    jax.tree.map(np.testing.assert_array_equal, base_after, base_before)
    assert all(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(adapters_after),
                                                         jax.tree.leaves(adapters_before)))


def test_lora_fine_tuning_of_a_trained_run_keeps_its_base_weights(trained, tmp_path):
    from llm_jax.checkpoint import restore_params
    from llm_jax.train.loop import train
    base_cfg, base = trained
    overrides = sft_overrides(base, comparison_sft_file(tmp_path / "sft.jsonl"), **{
        "train.steps": 40, "train.lr": 2e-2, "model.peft": "lora", "model.lora_rank": 4})
    cfg = config_lib.load_config(f"{base}/config.json", overrides)
    lines = []
    summary = train(cfg, str(tmp_path / "lora"), log=lines.append)
    first = json.loads(open(tmp_path / "lora" / "metrics.jsonl").readline())
    assert any("lora_a, lora_b from initialisation" in line for line in lines), lines
    # The base (20 steps) has frozen 0.02-std tied embeddings, which cap the logits: the adapters make the right
    # completion token the top one (accuracy 0 -> ~0.57) long before the loss can fall far (5.58 -> ~5.10).
    assert summary["eval_token_accuracy"] >= 0.4 and first["eval_token_accuracy"] == 0, (first, summary)
    assert summary["eval_loss"] < 0.95 * first["eval_loss"], (first, summary)
    abstract = build_trainable(cfg).abstract.params
    tuned, _ = restore_params(str(tmp_path / "lora"), abstract)
    original, _ = restore_params(base, peft.split(abstract)[0])
    tuned_base, adapters = peft.split(jax.device_get(tuned))
    jax.tree.map(np.testing.assert_array_equal, tuned_base, jax.device_get(original))
    assert adapters


def test_qlora_trains_adapters_over_an_nf4_base(trained, tmp_path):
    """QLoRA: the base quantized to NF4 (`llm-jax quantize`), LoRA adapters trained over it; the quantized base
    is not touched, and a quantized model without adapters is refused as untrainable."""
    from llm_jax.checkpoint import restore_params
    from llm_jax.errors import UserError
    from llm_jax.quant.command import quantize_workdir
    from llm_jax.train.loop import train
    _, base = trained
    quantized = str(tmp_path / "nf4")
    quantize_workdir(base, quantized, "nf4", group_size=16, log=lambda _: None)
    sets = sft_overrides(quantized, comparison_sft_file(tmp_path / "sft.jsonl"), **{"train.steps": 20,
                                                                                   "train.lr": 2e-2})
    with pytest.raises(UserError, match="cannot be trained; set model.peft=lora"):
        train(config_lib.load_config(f"{quantized}/config.json", sets), str(tmp_path / "refused"), log=lambda _: None)
    cfg = config_lib.load_config(f"{quantized}/config.json", sets | {"model.peft": "lora", "model.lora_rank": "4"})
    assert cfg.model.weight_quant == "nf4"
    summary = train(cfg, str(tmp_path / "qlora"), log=lambda _: None)
    first = json.loads(open(tmp_path / "qlora" / "metrics.jsonl").readline())
    assert summary["eval_loss"] < first["eval_loss"] - 0.1, (first, summary)
    abstract = build_trainable(cfg).abstract.params
    tuned_base, adapters = peft.split(jax.device_get(restore_params(str(tmp_path / "qlora"), abstract)[0]))
    original = jax.device_get(restore_params(quantized, peft.split(abstract)[0])[0])
    jax.tree.map(np.testing.assert_array_equal, tuned_base, original)
    assert adapters["layers"]["attention"]["query"]["lora_b"].any()


def test_the_peft_choices_are_the_registered_methods():
    assert config_lib.CHOICES["model.peft"] == ("none", *peft.KEYS)


@pytest.mark.parametrize("method", ["prefix", "adapter"])
def test_prefix_and_adapter_parameters_train_alone_and_decode_with_the_cache(method):
    """Prefix tuning and bottleneck adapters: their parameters (only) train; adapters start as the base model;
    decoding through the KV cache (prefill + one step) equals the full forward pass."""
    from llm_jax.infer.decode import empty_cache
    cfg = small_config(positions="rope", peft=method, prefix_len=3, adapter_dim=8)
    base_cfg = small_config(positions="rope")
    model, base = build_model(cfg.model), build_model(base_cfg.model)
    params = nn.unbox(init_params(model, 16, jax.random.key(1)))
    base_params, added = peft.split(params)
    assert sorted(added["layers"]) == (["attention"] if method == "prefix" else ["adapter_attn", "adapter_ffn"])
    full = logits(model, params)
    if method == "adapter":
        np.testing.assert_array_equal(full, logits(base, base_params))  # W_up = 0: the identity
    else:
        assert added["layers"]["attention"]["prefix_key"].shape == (2, 3, 4, 8)  # (layers, P, K, head_dim)
        assert np.abs(full - logits(base, base_params)).max() > 1e-4  # the prefix takes attention mass
    cache = empty_cache(model, params, 2, 16)
    prefill, state = model.apply({"params": params, "cache": cache}, TOKENS[:, :15], mutable=["cache"])
    step, _ = model.apply({"params": params, "cache": state["cache"]}, TOKENS[:, 15:],
                          positions_BL=jnp.full((2, 1), 15, jnp.int32), mutable=["cache"])
    np.testing.assert_allclose(np.asarray(prefill), full[:, :15], atol=1e-5)
    np.testing.assert_allclose(np.asarray(step)[:, 0], full[:, 15], atol=1e-5)

    trainable = build_trainable(cfg)
    assert trainable.sizes()["trainable"] == sum(x.size for x in jax.tree.leaves(added))
    assert param_count(cfg.model) == sum(x.size for x in jax.tree.leaves(params))  # the formula counts them
    state = trainable.init_state()
    batch = {k: np.asarray(np.random.default_rng(0).integers(0, 256, (8, 16)), np.int32)
             for k in ("inputs", "targets")} | {"segment_ids": np.zeros((8, 16), np.int32)}
    before = peft.split(jax.device_get(state.params))
    with trainable.activate():
        new, _ = trainable.train_step(state, trainable.to_device(batch))  # (donates the state)
    after = peft.split(jax.device_get(new.params))
    jax.tree.map(np.testing.assert_array_equal, after[0], before[0])
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(after[1]), jax.tree.leaves(before[1])))
