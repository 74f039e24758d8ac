"""The KV cache: greedy decoding with it is token-identical to re-running the whole window without it, for every
position variant, MHA/GQA/MQA, MoE and local/global layers; a batch of prompts of different lengths equals each
prompt alone (greedy and seeded sampling); each row stops at its EOS or its budget; the cache has the layout the
docs promise; a prompt that does not fit is one error."""

import jax
import jax.numpy as jnp
import pytest

from helpers import small_config
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
