"""Speculative decoding: greedy output token-identical to the target decoding alone (`decode.generate`) whatever the
draft — the target itself (every proposal kept), an unrelated random model (almost none kept), a perturbed copy (some
kept) and the target's first layers — for k = 1, 4 and 5, a batch of prompts of different lengths, EOS and the budget
falling inside a block; a draft with another vocabulary or tokenizer is one error; `convert truncate`, `generate
--draft-workdir` and `bench speculative` end to end."""

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import run_cli, small_config
from llm_jax.cli import main
from llm_jax.errors import UserError
from llm_jax.infer.decode import generate
from llm_jax.infer.draft import first_layers
from llm_jax.infer.load import load_workdir
from llm_jax.infer.speculative import check_draft, speculative_generate
from llm_jax.models import build_model

PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [3]]
CONTEXT = 48


def _model(n_layers):
    return build_model(small_config(seq_len=CONTEXT, positions="rope", n_kv_heads=2, n_layers=n_layers).model)


@functools.cache
def _init(model):
    return jax.jit(model.init)


def _params(model, seed, noise=0.0):
    """Initial parameters, sharpened (so greedy paths vary and a wrong key or position shows), times 1 + `noise` x
    a standard normal per entry (drawn on the host: quicker than compiling a draw per shape)."""
    params = _init(model)(jax.random.key(seed), jnp.zeros((1, CONTEXT), jnp.int32))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray((x * 20 if x.ndim > 1 else x)
                                              * (1 + noise * rng.standard_normal(x.shape)), x.dtype), params)


@pytest.fixture(scope="module")
def target():
    model = _model(4)
    return model, _params(model, 0)


@pytest.fixture(scope="module")
def drafts(target):
    model, params = target
    short = _model(2)
    short_params = first_layers(params, jax.eval_shape(lambda: short.init(jax.random.key(0),
                                                                          jnp.zeros((1, 8), jnp.int32))["params"]))
    return {"self": (model, params), "random": (model, _params(model, 1)),
            "perturbed": (model, _params(model, 0, 0.003)), "truncated": (short, short_params)}


@pytest.mark.parametrize("k", [1, 4, 5])
@pytest.mark.parametrize("draft", ["self", "random", "perturbed", "truncated"])
def test_greedy_output_is_the_targets_whatever_the_draft(target, drafts, draft, k):
    budgets = [20, 13, 7]  # ends inside a block for every k here
    alone = generate(*target, PROMPTS, budgets, CONTEXT).new_ids
    result = speculative_generate(*target, *drafts[draft], PROMPTS, budgets, CONTEXT, draft_tokens=k)
    assert result.new_ids == alone
    assert result.tokens == sum(budgets) and result.draft_tokens == k
    if draft == "self":  # every proposal kept: k + 1 tokens per target forward after the prefill's first token
        assert result.acceptance_rate == 1.0
        assert result.target_forwards == math.ceil((max(budgets) - 1) / (k + 1))
        assert result.proposed == k * sum(math.ceil((n - 1) / (k + 1)) for n in budgets)
    elif draft == "perturbed":  # some blocks keep every proposal, some none, some part
        assert 0 < result.acceptance_rate < 1, result.acceptance_rate
    else:
        assert result.acceptance_rate < (0.1 if draft == "random" else 1), result.acceptance_rate


def test_eos_inside_a_block_stops_each_row_like_generate(target, drafts):
    full = generate(*target, PROMPTS, 20, CONTEXT).new_ids
    for eos in {full[0][9], full[1][4], full[2][2], full[0][1]}:
        alone = generate(*target, PROMPTS, [20, 12, 16], CONTEXT, eos_id=eos).new_ids
        for draft in ("self", "perturbed"):
            for k in (4, 5):
                got = speculative_generate(*target, *drafts[draft], PROMPTS, [20, 12, 16], CONTEXT, draft_tokens=k,
                                           eos_id=eos)
                assert got.new_ids == alone, (eos, draft, k)
    assert any(len(row) < 12 for row in alone)  # some row did stop at its EOS


def test_budgets_of_one_and_two_tokens(target, drafts):
    alone = generate(*target, PROMPTS, [20, 1, 2], CONTEXT).new_ids
    assert [len(row) for row in alone] == [20, 1, 2]
    for draft in ("self", "perturbed"):
        got = speculative_generate(*target, *drafts[draft], PROMPTS, [20, 1, 2], CONTEXT, draft_tokens=5)
        assert got.new_ids == alone


def test_a_draft_that_cannot_serve_the_target_is_one_error(target, tmp_path):
    other = (build_model(small_config(vocab_size=128).model), None)  # refused before its parameters are read
    with pytest.raises(UserError, match=r"the draft model's vocabulary \(128 tokens\) differs from the target's "
                                        r"\(256\)"):
        speculative_generate(*target, *other, PROMPTS, 5, CONTEXT)
    with pytest.raises(UserError, match="exceeds the model's context of 48"):
        speculative_generate(*target, *target, [[1] * 45], 5, CONTEXT)
    a, b = tmp_path / "a", tmp_path / "b"
    for d, text in ((a, '{"one": 1}'), (b, '{"two": 2}')):
        d.mkdir()
        (d / "tokenizer.json").write_text(text)
    with pytest.raises(UserError, match="has another tokenizer than the target"):
        check_draft(target[0].cfg, target[0].cfg, str(a), str(b))
    (b / "tokenizer.json").write_text('{"one": 1}')
    check_draft(target[0].cfg, target[0].cfg, str(a), str(b))


def test_truncate_generate_and_bench_from_the_command_line(trained, tmp_path, capsys):
    _, workdir = trained
    draft = str(tmp_path / "draft")
    assert main(["convert", "truncate", "--workdir", workdir, "--layers", "1", "--out", draft, "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["layers"] == 1 and info["of_layers"] == 2 and info["params"] < info["source_params"]
    assert load_workdir(draft).cfg.model.n_layers == 1 and os.listdir(draft)
    assert main(["convert", "truncate", "--workdir", workdir, "--layers", "2", "--out", str(tmp_path / "d2")]) == 2
    assert "--layers 2: a draft keeps 1 to 1 of the 2 layers" in capsys.readouterr().err

    loaded = load_workdir(workdir)
    prompt = "the king"
    alone = generate(loaded.model, loaded.params, [loaded.tokenizer.encode(prompt)], 8, loaded.cfg.model.seq_len,
                     eos_id=loaded.tokenizer.eos_id).new_ids[0]
    proc = run_cli("generate", "--workdir", workdir, "--prompt", prompt, "--temperature", "0", "--max-new-tokens", 8,
                   "--draft-workdir", draft, "--draft-tokens", 3, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["new_token_ids"] == alone and out["draft_tokens"] == 3
    assert 0 <= out["acceptance_rate"] <= 1 and out["target_forwards"] >= 1

    assert main(["generate", "--workdir", workdir, "--prompt", prompt, "--draft-workdir", draft]) == 2
    assert "greedy only: add --temperature 0" in capsys.readouterr().err
    assert main(["bench", "speculative", "--workdir", workdir, "--draft-workdir", draft, "--new-tokens", "6",
                 "--draft-tokens", "2", "--prompt", prompt, "--json"]) == 0
    bench = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert bench["identical"] and bench["new_tokens"] == 6 and bench["draft_layers"] == 1
    assert bench["speedup"] == pytest.approx(bench["target_s"] / bench["speculative_s"])
    assert bench["speculative_tokens_per_sec"] == pytest.approx(6 / bench["speculative_s"])
