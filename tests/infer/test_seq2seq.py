"""Encoder-decoder generation with a cache (`infer/seq2seq.py`): cached greedy decoding is token-identical to
re-running the whole decoder over the target prefix without a cache (relative / RoPE / learned / sinusoidal
positions, MHA / GQA / MQA); a batch of sources of different lengths equals each alone (greedy and seeded
sampling); per-row EOS and budgets; cross-attention keys and values are computed once, at prefill; a converted
random tiny transformers T5 decodes exactly what transformers' `generate(do_sample=False)` does; an int8 self-
attention cache; `llm-jax generate` on an encoder-decoder work directory."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax.errors import UserError
from llm_jax.infer.decode import Sampling
from llm_jax.infer.seq2seq import _prefill, _self_attention_cache, _step, generate_seq2seq
from llm_jax.models import build_model
from llm_jax.models.layers import Dense

SOURCES = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [3]]
VARIANTS = {  # relative MHA: the T5 test below (against transformers)
    "relative_gqa": dict(positions="relative", n_kv_heads=2, norm="rmsnorm", use_bias=False, ffn="geglu"),
    "rope": dict(positions="rope"),
    "learned_mqa": dict(positions="learned", n_kv_heads=1),
    "sinusoidal": dict(positions="sinusoidal"),
}


@functools.lru_cache(maxsize=None)  # one model object per variant: its compiled functions are reused across tests
def _model(variant: str, scale: float = 1.0, **overrides):
    """A 2-layer d-32 encoder-decoder with random weights of standard deviation `scale` (norm gains near 1):
    sharper logits than at initialisation, so greedy paths vary and a wrong key, position or mask shows. Drawn
    from the shapes (`eval_shape`): compiling `init` would take longer than the test."""
    model = build_model(small_config("span_corruption", family="encdec", seq_len=32, **VARIANTS[variant],
                                     **overrides).model)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.RandomState(0)
    values = [rng.standard_normal(s.shape).astype(s.dtype) for _, s in leaves]
    values = [x * scale if x.ndim > 1 else 1 + 0.2 * x if "scale" in jax.tree_util.keystr(path) else 0.1 * x
              for x, (path, _) in zip(values, leaves)]
    return model, nn.meta.unbox(jax.tree.map(jnp.asarray, jax.tree.unflatten(tree, values)))


@functools.partial(jax.jit, static_argnames=("model",))
def _full_logits(model, params, source_1S, padding_1S, target_1T):
    return model.apply({"params": params}, source_1S, decoder_tokens_BT=target_1T, padding_BL=padding_1S)[0]


def uncached_greedy(model, params, source, n, start=0, eos=None):
    """The reference: each step re-runs the whole model (`__call__`: the encoder, and the decoder over the whole
    target prefix, no cache) on the source alone and takes the argmax at the last target position. The source is
    padded (masked) to 16 tokens and the target prefix to `n`: the positions after it are never seen (causal), and
    one shape compiles once."""
    source_1S, padding_1S = np.zeros((1, 16), np.int32), np.arange(16)[None] < len(source)
    source_1S[0, :len(source)] = source
    target = np.full((1, n), start, np.int32)
    new = []
    for i in range(n):
        token = int(jnp.argmax(_full_logits(model, params, source_1S, padding_1S, target)[i]))
        if token == eos:
            break
        new.append(token)
        if i + 1 < n:
            target[0, i + 1] = token
    return new


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_greedy_equals_uncached_and_a_batch_equals_each_source_alone(variant):
    model, params = _model(variant)
    result = generate_seq2seq(model, params, SOURCES, 10, decoder_start_id=0)
    for source, got in zip(SOURCES, result.new_ids):
        assert got == uncached_greedy(model, params, source, 10), (variant, source)
    assert result.tokens == 30 and len({tuple(r) for r in result.new_ids}) > 1  # paths that differ
    assert len(set(sum(result.new_ids, []))) > 2


def test_sampling_per_row_seeds_eos_and_budgets():
    model, params = _model("relative_gqa")
    sampling = Sampling(temperature=1.0, top_k=20, top_p=0.9)
    batch = generate_seq2seq(model, params, SOURCES, 10, sampling=sampling, seeds=[1, 2, 3]).new_ids
    alone = [generate_seq2seq(model, params, [s], 10, sampling=sampling, seeds=[seed]).new_ids[0]
             for s, seed in zip(SOURCES, [1, 2, 3])]
    assert batch == alone
    assert generate_seq2seq(model, params, SOURCES[:1], 10, sampling=sampling, seeds=[4]).new_ids != batch[:1]
    full = generate_seq2seq(model, params, SOURCES, 10).new_ids
    eos = full[1][4]  # the 5th token of row 1: that row stops before it
    stopped = generate_seq2seq(model, params, SOURCES, [10, 10, 3], eos_id=eos).new_ids
    cut = lambda row, n=10: row[:row.index(eos)] if eos in row[:n] else row[:n]  # noqa: E731
    assert stopped == [cut(full[0]), cut(full[1]), cut(full[2], 3)]
    assert stopped[1] == uncached_greedy(model, params, SOURCES[1], 10, eos=eos)
    with pytest.raises(UserError, match="a source of 33 tokens exceeds the encoder's context of 32"):
        generate_seq2seq(model, params, [[1] * 33], 5)
    with pytest.raises(UserError, match="a source is empty"):
        generate_seq2seq(model, params, [[1], []], 5)


def test_cross_attention_keys_and_values_are_computed_once_at_prefill():
    model, params = _model("relative_gqa")
    B, S = len(SOURCES), 64
    sources = np.zeros((B, S), np.int32)
    for row, source in enumerate(SOURCES):
        sources[row, :len(source)] = source
    padding = sources > 0
    prefill = functools.partial(_prefill, model, params, sources_BS=jnp.asarray(sources),
                                padding_BS=jnp.asarray(padding), start_B1=jnp.zeros((B, 1), jnp.int32))
    step = jax.jit(lambda c, t, p: model.apply({"params": params, "cache": c}, t, p, mutable=["cache"], method=_step))
    calls = []

    def count(next_fun, args, kwargs, context):  # every projection a trace runs, by module path
        if context.method_name == "__call__" and isinstance(context.module, Dense):
            calls.append("/".join(context.module.path))
        return next_fun(*args, **kwargs)

    def cross_projections(fn, *args):  # traced afresh (no compiled function skips them)
        calls.clear()
        with nn.intercept_methods(count):
            jax.eval_shape(fn, *args)
        return sorted({c for c in calls if "/cross/" in c})

    cache = _self_attention_cache(model, params, B, 64)
    assert set(cache["decoder"]["layers"]) == {"attention"}  # cross-attention K/V are not there yet
    assert cross_projections(lambda c: prefill.func.__wrapped__(*prefill.args, c, **prefill.keywords), cache) == [
        "decoder/layers/cross/key", "decoder/layers/cross/out", "decoder/layers/cross/query",
        "decoder/layers/cross/value"]
    logits, cache = prefill(cache)
    cross = cache["decoder"]["layers"]["cross"]
    assert cross["cached_cross_key"].shape == cross["cached_cross_value"].shape == (2, B, S, 2, 8)  # (layers, ...)
    np.testing.assert_array_equal(np.asarray(cross["cached_cross_padding"][1]), padding)  # the encoder's mask, kept
    token, state = jnp.argmax(logits, -1)[:, None].astype(jnp.int32), cache
    # a decode step never projects the encoder output again (no key / value) ...
    assert cross_projections(step, state, token, jnp.ones((B, 1), jnp.int32)) == [
        "decoder/layers/cross/out", "decoder/layers/cross/query"]
    for position in (1, 2, 3):  # ... and keeps what prefill computed as it is
        logits_B1V, new = step(state, token, jnp.full((B, 1), position, jnp.int32))
        for name in ("cached_cross_key", "cached_cross_value", "cached_cross_padding"):
            np.testing.assert_array_equal(np.asarray(new["cache"]["decoder"]["layers"]["cross"][name]),
                                          np.asarray(cross[name]))
        state, token = new["cache"], jnp.argmax(logits_B1V[:, 0], -1)[:, None].astype(jnp.int32)
    # ... but does read it: other cross keys in the cache change the step's logits
    moved = jax.tree.map(lambda x: x, state)
    moved["decoder"]["layers"]["cross"]["cached_cross_key"] = cross["cached_cross_key"][:, ::-1]
    four = jnp.full((B, 1), 4, jnp.int32)
    assert not np.allclose(step(moved, token, four)[0], step(state, token, four)[0])


def test_an_int8_self_attention_cache_decodes_close_to_the_float_one():
    model, params = _model("relative_gqa", 0.5)  # milder weights: unit-scale attention is nearly argmax, and
    model8, _ = _model("relative_gqa", 0.5, kv_cache_dtype="int8")  # int8 rounding would flip which key wins
    sources = jnp.asarray([[5, 6, 7, 8, 9, 10, 0], [9, 10, 11, 12, 13, 14, 15]])
    padding, target = sources > 0, jnp.asarray([[0, 4, 8, 15, 16, 23, 42]] * 2)

    @functools.partial(jax.jit, static_argnames="m")
    def teacher_forced(m):
        cache = _self_attention_cache(m, params, 2, 64)
        memory = m.apply({"params": params}, sources, padding, method="encode")
        logits, state = m.apply({"params": params, "cache": cache}, target, memory, padding, mutable=["cache"],
                                method="decode", positions_BT=jnp.broadcast_to(jnp.arange(7), (2, 7)))
        return logits, state["cache"]["decoder"]["layers"]

    logits, _ = teacher_forced(model)  # the target in one call through the cache, each model's own
    logits8, layers8 = teacher_forced(model8)
    assert {k: v.dtype for k, v in layers8["attention"].items()} == {
        "cached_key": jnp.int8, "cached_value": jnp.int8, "cached_key_scale": jnp.float32,
        "cached_value_scale": jnp.float32}
    assert layers8["cross"]["cached_cross_key"].dtype == jnp.float32  # cross-attention K/V stay in compute dtype
    error = float(jnp.abs(logits8 - logits).max() / jnp.abs(logits).max())
    assert 0 < error < 0.02
    rows, rows8 = (generate_seq2seq(m, params, SOURCES, 10).new_ids for m in (model, model8))
    same = [a == b for row, row8 in zip(rows, rows8) for a, b in zip(row, row8)]
    assert sum(same) / len(same) >= 0.8


def test_a_converted_t5_generates_what_transformers_generates(tmp_path):
    torch = pytest.importorskip("torch", reason="the `hf` extra (transformers + CPU torch) is not installed")
    transformers = pytest.importorskip("transformers", reason="the `hf` extra (transformers) is not installed")
    from llm_jax.interop.t5 import load_hf_t5
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                   feed_forward_proj="gated-gelu", dropout_rate=0.0, decoder_start_token_id=0,
                                   pad_token_id=0, eos_token_id=1)
    hf = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():  # sharper logits, non-trivial norm gains
        for name, p in hf.named_parameters():
            p.mul_(4.0) if "layer_norm" not in name else p.add_(0.2 * torch.randn_like(p))
    hf.save_pretrained(str(tmp_path))
    cfg, params = load_hf_t5(str(tmp_path))
    model = build_model(cfg.model)
    sources = [[12, 40, 7, 33, 1], [5, 6, 70, 8, 9, 21, 22, 23, 24, 1], [3, 1]]
    ids, mask = np.zeros((3, 10), np.int64), np.zeros((3, 10), np.int64)
    for row, s in enumerate(sources):
        ids[row, :len(s)], mask[row, :len(s)] = s, 1

    def reference(eos):
        with torch.no_grad():
            out = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                              max_new_tokens=12, eos_token_id=eos).numpy()
        assert (out[:, 0] == 0).all()  # decoder_start_token_id = pad = 0
        rows = [r[1:].tolist() for r in out]
        return [r[:r.index(eos)] if eos in r else r for r in rows]  # transformers' EOS and the padding after it

    ours = generate_seq2seq(model, params, sources, 12, decoder_start_id=0, eos_id=1).new_ids
    assert ours == reference(1)
    longest = max(ours, key=len)
    assert len(longest) == 12 and len({tuple(r) for r in ours}) == 3
    eos = longest[5]  # a token the model does emit: rows stop there, as transformers' rows do
    ours = generate_seq2seq(model, params, sources, 12, decoder_start_id=0, eos_id=eos).new_ids
    assert ours == reference(eos) and any(len(r) < 12 for r in ours)


def test_llm_jax_generate_decodes_a_target_on_an_encdec_workdir(tmp_path, capsys):
    from llm_jax import checkpoint, config as config_lib
    from llm_jax.cli import main
    from llm_jax.data.tokenizers.wordpiece import CharTokenizer
    workdir = tmp_path / "run"
    workdir.mkdir()
    tokenizer = CharTokenizer.train(["ab cd ef gh ij"])
    tokenizer.save(str(workdir))
    cfg = small_config("span_corruption", family="encdec", seq_len=32, vocab_size=len(tokenizer.vocab),
                       **VARIANTS["relative_gqa"])
    model, params = _model("relative_gqa", vocab_size=len(tokenizer.vocab))
    checkpoint.save_params(str(workdir), params)
    (workdir / "config.json").write_text(config_lib.to_json(cfg))
    capsys.readouterr()
    assert main(["generate", "--workdir", str(workdir), "--prompt", "ab cd", "--max-new-tokens", "10",
                 "--temperature", "0", "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    source = tokenizer.encode("ab cd")
    expected = generate_seq2seq(model, params, [source], 10, eos_id=tokenizer.eos_id).new_ids[0]
    assert got["prompt_token_ids"] == source and got["new_token_ids"] == expected and len(expected) > 1
    assert got["completion"] == tokenizer.decode(expected) and got["new_tokens"] == len(expected)
    assert {"ttft_s", "tpot_s", "tokens_per_sec", "step"} <= set(got)
    assert main(["generate", "--workdir", str(workdir), "--prompt", "ab", "--num-beams", "2",
                 "--temperature", "0"]) != 0
    assert "--num-beams and --draft-workdir are decoder-only" in capsys.readouterr().err
