"""The encoder family (BERT): parity with Hugging Face BertForMaskedLM / BertModel / BertForSequenceClassification
in both directions (float32, 1e-4), the padding mask, bidirectionality, parameter accounting (bert-base-uncased's
109,482,240 + the MLM head), and the config rules that keep decoders unchanged."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import REPO, run_cli
from llm_jax import config as config_lib
from llm_jax.config import ConfigError, load_config
from llm_jax.models import build_model
from llm_jax.models.accounting import param_count

BERT_BASE_MODEL = 109_482_240             # transformers.BertModel(bert-base-uncased config), pooler included
BERT_MLM_HEAD = 768 * 768 + 768 + 2 * 768 + 30522


def encoder_config(**model):
    """A 2-layer, d=32 BERT-like encoder config (resolved, validated) training MLM."""
    cfg = config_lib.default_config()
    cfg.model.update(dict(dict(family="encoder", vocab_size=99, seq_len=40, d_model=32, n_layers=2, n_heads=4,
                               norm_position="post", norm_eps=1e-12, type_vocab_size=2), **model))
    cfg.train.update(objective="mlm", steps=20, batch_size=8, warmup_steps=2)
    cfg = config_lib.resolve(cfg)
    config_lib.validate(cfg)
    return cfg


def tree_size(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


def abstract_params(cfg):
    model = build_model(cfg.model)
    return jax.eval_shape(lambda r: nn.unbox(model.init(r, jnp.zeros((1, 8), jnp.int32))["params"]),
                          jax.random.key(0))


def run(model, params, tokens, head="hidden", **kwargs):
    """model.apply, jitted (eager applies of a scanned model are slow)."""
    fn = jax.jit(lambda p, t, kw: model.apply({"params": p}, t, head=head, **kw))
    return np.asarray(fn(params, jnp.asarray(tokens), {k: jnp.asarray(v) for k, v in kwargs.items()}))


def init(cfg, seed=0):
    model = build_model(cfg.model)
    return model, nn.unbox(jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))["params"])


# ------------------------------------------------------------------------------------------ accounting


VARIANTS = {"bert": {}, "pre_ln": {"norm_position": "pre"}, "untied": {"tie_embeddings": False},
            "no_types": {"type_vocab_size": 0}, "classifier": {"num_labels": 3}, "no_bias": {"use_bias": False},
            "rope_swiglu_rms": {"positions": "rope", "ffn": "swiglu", "norm": "rmsnorm", "n_kv_heads": 2}}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_param_count_equals_the_tree(variant):
    cfg = encoder_config(**VARIANTS[variant])
    assert param_count(cfg.model) == tree_size(abstract_params(cfg))


def test_bert_base_has_bert_models_parameters_plus_the_mlm_head():
    cfg = load_config(os.path.join(REPO, "configs", "bert_base.py"))
    tree = abstract_params(cfg)  # shapes only: nothing is allocated
    assert tree_size(tree) == BERT_BASE_MODEL + BERT_MLM_HEAD == 110_104_890
    assert param_count(cfg.model) == tree_size(tree)
    assert tree_size(tree) - tree_size(tree["mlm"]) == BERT_BASE_MODEL
    proc = run_cli("estimate", "--config", "configs/bert_base.py", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json
    assert json.loads(proc.stdout.strip().splitlines()[-1])["params"] == BERT_BASE_MODEL + BERT_MLM_HEAD


def test_every_encoder_parameter_has_logical_axis_names():
    cfg = encoder_config(num_labels=3, tie_embeddings=False)
    model = build_model(cfg.model)
    boxed = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32))["params"], jax.random.key(0))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) and len(x.names) == x.value.ndim for x in leaves)


# ------------------------------------------------------------------------------------------ behaviour


def test_heads_and_their_shapes():
    cfg = encoder_config(num_labels=3)
    model, params = init(cfg)
    tokens = jnp.ones((2, 8), jnp.int32)
    shapes = {h: run(model, params, tokens, h).shape for h in ("mlm", "hidden", "pooled", "classify")}
    assert shapes == {"mlm": (2, 8, 99), "hidden": (2, 8, 32), "pooled": (2, 32), "classify": (2, 3)}
    with pytest.raises(ValueError, match="model.num_labels"):
        run(*init(encoder_config()), tokens, "classify")


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_padding_contents_change_nothing_for_real_tokens(norm_position):
    cfg = encoder_config(norm_position=norm_position)
    model, params = init(cfg)
    rng = np.random.RandomState(0)
    tokens = rng.randint(0, 99, (3, 16))
    padding = np.ones((3, 16), bool)
    padding[0, 10:], padding[2, 5:] = False, False
    base = run(model, params, tokens, padding_BL=padding)
    changed = np.where(padding, tokens, rng.randint(0, 99, tokens.shape))
    assert (changed != tokens).any()
    np.testing.assert_allclose(run(model, params, changed, padding_BL=padding)[padding], base[padding], atol=1e-6,
                               rtol=0)
    unmasked = run(model, params, changed)  # without the mask, padding leaks into real tokens
    assert not np.allclose(unmasked[padding], base[padding], atol=1e-4)


def test_attention_is_bidirectional():
    cfg = encoder_config()
    model, params = init(cfg)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, 99, (1, 12)))
    base = run(model, params, tokens)
    later = run(model, params, tokens.at[0, 11].set((tokens[0, 11] + 5) % 99))
    assert not np.allclose(base[0, 0], later[0, 0])  # a later token changes the first position's output


def test_token_types_change_the_output():
    cfg = encoder_config()
    model, params = init(cfg)
    tokens = jnp.ones((1, 6), jnp.int32)
    a = run(model, params, tokens)
    b = run(model, params, tokens, token_types_BL=jnp.ones((1, 6), jnp.int32))
    assert not np.allclose(a, b)


# ----------------------------------------------------------------------------------------- config rules


@pytest.mark.parametrize("overrides, message", [
    ({"train.objective": "mlm"}, r"train.objective='mlm' trains the encoder family, but model.family='decoder'"),
    ({"model.family": "encoder"}, r"train.objective='causal_lm' trains the decoder family"),
    ({"model.type_vocab_size": "2"}, r"model.type_vocab_size=2 belongs to the encoder family"),
    ({"model.num_labels": "2"}, r"model.num_labels=2 belongs to the encoder family"),
    ({"model.family": "encoder", "train.objective": "mlm", "model.mask_token_id": "5000"},
     r"model.mask_token_id=5000: must be -1"),
    ({"model.family": "encoder", "train.objective": "mlm", "model.num_labels": "-1"}, r"model.num_labels=-1"),
    ({"model.family": "encoder", "train.objective": "mlm", "mesh.stage": "2"}, r"no pipeline parallelism"),
])
def test_config_rules(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_new_keys_add_nothing_to_a_decoder():
    cfg = load_config(None, {})
    tree = abstract_params(cfg)
    assert not {"type_embed", "norm_embed", "pooler", "mlm", "classifier"} & set(tree)
    assert param_count(cfg.model) == tree_size(tree)


# -------------------------------------------------------------------------------- Hugging Face parity

torch = pytest.importorskip("torch", reason="the `hf` extra (transformers + CPU torch) is not installed")
transformers = pytest.importorskip("transformers", reason="the `hf` extra (transformers) is not installed")

from llm_jax.interop.bert import hf_to_params, load_hf_bert, params_to_hf, save_hf_bert  # noqa: E402

VOCAB = 99


def hf_bert_config(**kw):
    return transformers.BertConfig(**dict(dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, type_vocab_size=2), **kw))


def perturbed(model):
    """Non-trivial LayerNorm gains and biases, so a swapped or dropped tensor shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def inputs():
    rng = np.random.RandomState(0)
    ids, types = rng.randint(0, VOCAB, (2, 24)), rng.randint(0, 2, (2, 24))
    padding = np.ones((2, 24), bool)
    padding[1, 17:] = False
    return ids, types, padding


def hf_outputs(model, ids, types, padding):
    with torch.no_grad():
        return model(torch.tensor(ids), token_type_ids=torch.tensor(types),
                     attention_mask=torch.tensor(padding.astype(np.int64)))


def ours(cfg, params, head, ids, types, padding):
    return run(build_model(cfg.model), params, ids, head, token_types_BL=types, padding_BL=padding)


def test_masked_lm_logits_match_hugging_face_from_a_saved_checkpoint(tmp_path):
    torch.manual_seed(0)
    hf = perturbed(transformers.BertForMaskedLM(hf_bert_config()))
    hf.save_pretrained(str(tmp_path))  # tied decoder weight and bias are not in the file
    cfg, params, fresh = load_hf_bert(str(tmp_path))
    assert fresh == ["the pooler"]  # BertForMaskedLM has none
    assert cfg.model.family == "encoder" and cfg.model.norm_eps == 1e-12 and cfg.model.norm_position == "post"
    ids, types, padding = inputs()
    reference = hf_outputs(hf, ids, types, padding).logits.numpy()
    assert np.abs(reference).max() > 1e-2
    np.testing.assert_allclose(ours(cfg, params, "mlm", ids, types, padding)[padding], reference[padding],
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_bare_bert_model_hidden_states_and_pooler_match(act):
    torch.manual_seed(0)
    hf = perturbed(transformers.BertModel(hf_bert_config(hidden_act=act)))
    tensors = {k: v.numpy() for k, v in hf.state_dict().items()}
    from llm_jax.interop.bert import model_fields_from_hf
    cfg = encoder_config(**model_fields_from_hf(hf.config.to_dict(), tensors))
    params, fresh = hf_to_params(tensors, cfg.model)
    assert fresh == ["the MLM head"]
    ids, types, padding = inputs()
    out = hf_outputs(hf, ids, types, padding)
    np.testing.assert_allclose(ours(cfg, params, "hidden", ids, types, padding)[padding],
                               out.last_hidden_state.numpy()[padding], atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours(cfg, params, "pooled", ids, types, padding), out.pooler_output.numpy(),
                               atol=1e-4, rtol=0)


def test_our_encoder_exported_to_hugging_face_gives_the_same_outputs(tmp_path):
    cfg = encoder_config(num_labels=3, dropout=0.1)
    _, params = init(cfg, seed=3)
    rng = np.random.RandomState(2)  # non-trivial norms and biases (our init has ones and zeros)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.1 * rng.randn(*x.shape).astype(np.float32)
        if any(getattr(k, "key", "") in ("bias", "scale") for k in path) else x, params)
    save_hf_bert(cfg.model, params, str(tmp_path))
    ids, types, padding = inputs()
    mlm = transformers.BertForMaskedLM.from_pretrained(str(tmp_path)).eval()
    np.testing.assert_allclose(hf_outputs(mlm, ids, types, padding).logits.numpy()[padding],
                               ours(cfg, params, "mlm", ids, types, padding)[padding], atol=1e-4, rtol=0)
    bare = transformers.BertModel.from_pretrained(str(tmp_path)).eval()
    out = hf_outputs(bare, ids, types, padding)
    np.testing.assert_allclose(out.last_hidden_state.numpy()[padding],
                               ours(cfg, params, "hidden", ids, types, padding)[padding], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.pooler_output.numpy(), ours(cfg, params, "pooled", ids, types, padding),
                               atol=1e-4, rtol=0)
    classify = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    np.testing.assert_allclose(hf_outputs(classify, ids, types, padding).logits.numpy(),
                               ours(cfg, params, "classify", ids, types, padding), atol=1e-4, rtol=0)
    back, fresh = hf_to_params(params_to_hf(params, cfg.model), cfg.model)  # and back again, exactly
    assert fresh == []
    jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, params))


def test_a_pre_ln_encoder_has_no_bert_equivalent():
    from llm_jax.interop.bert import ConversionError
    cfg = encoder_config(norm_position="pre")
    with pytest.raises(ConversionError, match="model.norm_position='pre'"):
        params_to_hf(init(cfg)[1], cfg.model)
