import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import REPO, small_config
from llm_jax.config import load_config
from llm_jax.models import build_model
from llm_jax.models.accounting import param_count

SHIPPED = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".py"))

VARIANTS = {
    "learned": {}, "sinusoidal": {"positions": "sinusoidal"}, "rope": {"positions": "rope"},
    "nopos": {"positions": "none"}, "rmsnorm": {"norm": "rmsnorm"}, "post_ln": {"norm_position": "post"},
    "relu": {"ffn": "relu"}, "gelu_tanh": {"ffn": "gelu_tanh"}, "swiglu": {"ffn": "swiglu"},
    "gqa": {"n_kv_heads": 2}, "mqa": {"n_kv_heads": 1}, "untied": {"tie_embeddings": False},
    "no_bias": {"use_bias": False}, "remat_full": {"remat": "full"}, "remat_dots": {"remat": "dots"},
    "llama_like": {"positions": "rope", "norm": "rmsnorm", "ffn": "swiglu", "n_kv_heads": 2,
                   "tie_embeddings": False, "use_bias": False},
    "moe": {"moe_experts": 4, "moe_top_k": 2},  # dropless routing is per token, so causal like the rest
    "moe_shared_sigmoid": {"moe_experts": 4, "moe_top_k": 2, "moe_shared_experts": 1, "moe_router": "sigmoid",
                           "moe_d_ff": 48, "ffn": "swiglu"},
}


def tree_size(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def abstract_params(cfg):
    model = build_model(cfg.model)
    return jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))["params"], jax.random.key(0))


@pytest.mark.parametrize("name", SHIPPED)
def test_param_count_formula_matches_the_tree_for_shipped_configs(name):
    cfg = load_config(os.path.join(REPO, "configs", f"{name}.py"))
    assert param_count(cfg.model) == tree_size(nn.unbox(abstract_params(cfg)))


def test_gpt2_small_has_124439808_parameters():
    cfg = load_config(os.path.join(REPO, "configs", "gpt2_small.py"))
    assert param_count(cfg.model) == 124_439_808


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_param_count_formula_matches_every_variant(variant):
    cfg = small_config(**VARIANTS[variant])
    assert param_count(cfg.model) == tree_size(nn.unbox(abstract_params(cfg)))


def test_every_parameter_has_logical_axis_names():
    cfg = small_config(**VARIANTS["llama_like"])
    boxed = abstract_params(cfg)
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    for leaf in leaves:
        assert len(leaf.names) == leaf.value.ndim
    layers = nn.get_partition_spec(boxed)["layers"]["attention"]["query"]["kernel"]
    assert tuple(layers) == ("layers", "embed", "heads", "head_dim")


@pytest.mark.parametrize("variant", ["learned", "sinusoidal", "rope", "nopos", "post_ln", "gqa", "mqa"])
def test_causality_a_later_token_never_changes_an_earlier_logit(variant):
    cfg = small_config(**VARIANTS[variant])
    model = build_model(cfg.model)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 256)
    params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
    apply = jax.jit(model.apply)
    base = apply({"params": params}, tokens)
    for t in (3, 9, 15):
        changed = tokens.at[:, t].set((tokens[:, t] + 17) % 256)
        logits = apply({"params": params}, changed)
        np.testing.assert_array_equal(np.asarray(logits[:, :t]), np.asarray(base[:, :t]))
        assert not np.allclose(logits[:, t], base[:, t])  # the changed position itself does change


def test_scan_keeps_compile_size_flat_in_depth():
    """The scanned stack lowers to one loop body: HLO text barely grows from 2 to 16 layers."""
    sizes = []
    for depth in (2, 16):
        cfg = small_config(n_layers=depth)
        model = build_model(cfg.model)
        tokens = jnp.zeros((1, 16), jnp.int32)
        params = jax.eval_shape(lambda r: model.init(r, tokens)["params"], jax.random.key(0))
        text = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(nn.unbox(params), tokens).as_text()
        sizes.append(len(text))
    assert sizes[1] < 1.1 * sizes[0]


def test_unrolled_scan_computes_the_same_function():
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 256)
    outputs = []
    for unroll in (1, 2):
        model = build_model(small_config(scan_unroll=unroll).model)
        params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
        outputs.append(jax.jit(model.apply)({"params": params}, tokens))
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)


def test_compute_dtype_is_separate_from_parameter_dtype():
    cfg = small_config(dtype="bfloat16", param_dtype="float32")
    model = build_model(cfg.model)
    tokens = jnp.zeros((1, 16), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.unbox(params)))
    forward = jax.jit(lambda p: model.apply({"params": p}, tokens))
    assert "bf16" in forward.lower(params).as_text()
    assert forward(params).dtype == jnp.float32  # logits for the loss in float32


def test_dropout_is_active_only_when_not_deterministic():
    cfg = small_config(dropout=0.5)
    model = build_model(cfg.model)
    tokens = jnp.ones((1, 16), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]
    apply = jax.jit(model.apply, static_argnames="deterministic")
    a = apply({"params": params}, tokens)
    b = apply({"params": params}, tokens)
    np.testing.assert_array_equal(a, b)
    c = apply({"params": params}, tokens, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(a, c)
