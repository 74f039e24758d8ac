"""The KV cache: greedy decoding with it is token-identical to re-running the whole window without it, for every
position variant, MHA/GQA/MQA, MoE and local/global layers; a batch of prompts of different lengths equals each
prompt alone (greedy and seeded sampling); each row stops at its EOS or its budget; the cache has the layout the
docs promise; a prompt that does not fit is one error; an int8 cache; decoding over a 4-device mesh."""

import textwrap

import jax
import jax.numpy as jnp
import pytest

from helpers import run_script, small_config
from llm_jax.errors import UserError
from llm_jax.infer.decode import Sampling, _prefill, empty_cache, generate
from llm_jax.infer.generate import generate_ids
from llm_jax.models import build_model

PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [3]]
VARIANTS = {
    "learned": dict(),
    "sinusoidal_mqa": dict(positions="sinusoidal", n_kv_heads=1),
    "rope_gqa": dict(positions="rope", n_kv_heads=2),
    "rope_linear": dict(positions="rope", rope_scaling="linear", rope_factor=4.0),
    "rope_yarn": dict(positions="rope", rope_scaling="yarn", rope_factor=4.0, rope_original_len=8),
    "rope_llama3": dict(positions="rope", rope_scaling="llama3", rope_factor=4.0, rope_original_len=8),
    "moe": dict(positions="rope", moe_experts=4, moe_top_k=2),
    "local_global": dict(positions="rope", attention_window=4, local_global_pattern=2),
}


def _model(**overrides):
    cfg = small_config(seq_len=32, **overrides).model
    model = build_model(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, 32), jnp.int32))["params"]
    # sharper logits than at initialisation, so greedy paths vary and a wrong key or position shows
    return model, jax.tree.map(lambda x: x * 20 if x.ndim > 1 else x, params)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_greedy_equals_uncached_for_every_variant(variant):
    model, params = _model(**VARIANTS[variant])
    result = generate(model, params, PROMPTS, 12, 32)
    for prompt, got in zip(PROMPTS, result.new_ids):
        assert got == generate_ids(model, params, prompt, 12, 32, temperature=0.0), (variant, prompt)
    assert result.tokens == 36 and len({tuple(r) for r in result.new_ids}) == 3


def test_a_batch_equals_each_prompt_alone_when_sampling_with_per_row_seeds():
    model, params = _model(positions="rope", n_kv_heads=2)
    sampling = Sampling(temperature=1.0, top_k=20, top_p=0.9)
    batch = generate(model, params, PROMPTS, 10, 32, sampling=sampling, seeds=[1, 2, 3]).new_ids
    alone = [generate(model, params, [p], 10, 32, sampling=sampling, seeds=[s]).new_ids[0]
             for p, s in zip(PROMPTS, [1, 2, 3])]
    assert batch == alone
    assert generate(model, params, PROMPTS[:1], 10, 32, sampling=sampling, seeds=[4]).new_ids != batch[:1]


def test_each_row_stops_at_its_eos_or_its_budget():
    model, params = _model()
    full = generate(model, params, PROMPTS, 12, 32).new_ids
    eos = full[1][4]  # the 5th token of row 1: that row stops before it
    stopped = generate(model, params, PROMPTS, [12, 12, 3], 32, eos_id=eos).new_ids
    assert stopped[1] == full[1][:full[1].index(eos)]
    assert stopped[2] == full[2][:3] if eos not in full[2][:3] else full[2][:full[2].index(eos)]
    assert stopped[0] == (full[0][:full[0].index(eos)] if eos in full[0] else full[0])


def test_the_cache_is_layers_batch_slots_kv_heads_head_dim():
    model, params = _model(positions="rope", n_kv_heads=2)
    _, cache = _prefill(model, params, empty_cache(model, params, 3, 24), jnp.ones((3, 5), jnp.int32),
                        jnp.asarray([5, 2, 1]))
    shapes = {k: v.shape for k, v in jax.tree_util.tree_leaves_with_path(cache)}
    assert set(shapes.values()) == {(2, 3, 24, 2, 8)} and len(shapes) == 2  # cached_key and cached_value


def test_a_prompt_that_does_not_fit_the_context_is_one_error():
    model, params = _model()
    with pytest.raises(UserError, match="a prompt of 30 tokens plus 5 new tokens exceeds the model's context of 32"):
        generate(model, params, [[1] * 30], 5, 32)
    with pytest.raises(UserError, match="a prompt is empty"):
        generate(model, params, [[1], []], 5, 32)


def test_an_int8_cache_holds_codes_and_scales_and_decodes_close_to_the_float_one():
    model, params = _model(positions="rope", n_kv_heads=2)
    model8 = build_model(small_config(seq_len=32, positions="rope", n_kv_heads=2, kv_cache_dtype="int8").model)
    tokens, lengths = jnp.asarray([[5, 6, 7, 8, 9, 10, 11]] * 2), jnp.asarray([7, 4])
    logits, cache = _prefill(model, params, empty_cache(model, params, 2, 24), tokens, lengths)
    logits8, cache8 = _prefill(model8, params, empty_cache(model8, params, 2, 24), tokens, lengths)
    dtypes = {jax.tree_util.keystr(k).split("'")[-2]: v.dtype for k, v in jax.tree_util.tree_leaves_with_path(cache8)}
    assert dtypes == {"cached_key": jnp.int8, "cached_value": jnp.int8, "cached_key_scale": jnp.float32,
                      "cached_value_scale": jnp.float32}
    nbytes = lambda c: sum(x.nbytes for x in jax.tree.leaves(c))  # noqa: E731
    assert nbytes(cache8) / nbytes(cache) == (8 + 4) / (4 * 8)  # head_dim 8: int8 codes + one float32 scale
    error = float(jnp.abs(logits8 - logits).max() / jnp.abs(logits).max())
    assert 0 < error < 0.02
    same = [a == b for row, row8 in zip(generate(model, params, PROMPTS, 12, 32).new_ids,
                                        generate(model8, params, PROMPTS, 12, 32).new_ids) for a, b in zip(row, row8)]
    assert sum(same) / len(same) >= 0.8


def test_decoding_over_a_mesh_shards_the_cache_and_equals_one_device():
    proc = run_script(textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        import sys; sys.path.insert(0, "tests")
        import jax, jax.numpy as jnp
        from helpers import small_config
        from llm_jax.infer.decode import _prefill, empty_cache, generate
        from llm_jax.models import build_model
        from llm_jax.parallel.mesh import activate, logical_shardings, make_mesh, rules_tuple, unboxed
        cfg = small_config(seq_len=32, positions="rope", n_kv_heads=2)
        cfg.mesh.data, cfg.mesh.tensor = 2, 2
        model = build_model(cfg.model)
        boxed = model.init(jax.random.key(0), jnp.zeros((1, 32), jnp.int32))["params"]
        params = jax.tree.map(lambda x: x * 20 if x.ndim > 1 else x, unboxed(boxed))
        prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
        alone = generate(model, params, prompts, 10, 32).new_ids
        mesh, rules = make_mesh(cfg), rules_tuple(cfg)
        sharded = jax.device_put(params, logical_shardings(jax.eval_shape(lambda: boxed), mesh, rules))
        with activate(mesh, rules):
            got = generate(model, sharded, prompts, 10, 32).new_ids
            _, cache = _prefill(model, sharded, empty_cache(model, sharded, 2, 64),
                                jnp.asarray([[5, 6, 7, 0, 0], [9, 10, 11, 12, 13]]), jnp.asarray([3, 5]))
        leaf = jax.tree.leaves(cache)[0]
        print(got == alone, len(leaf.sharding.device_set), tuple(leaf.sharding.spec)[:4])
    """))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # (layers, batch over data, slots, K/V heads over tensor) on all 4 devices, and the same tokens
    assert proc.stdout.split("\n")[-2] == "True 4 (None, 'data', None, 'tensor')", proc.stdout
