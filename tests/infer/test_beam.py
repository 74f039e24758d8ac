"""Beam search (`infer/beam.py`) against transformers' `generate(num_beams=...)` on a random tiny GPT-2 converted
with `llm-jax convert from-hf`: the same hypotheses and `sequences_scores` within 1e-4, with and without EOS,
under each early_stopping rule; num_beams=1 is greedy; `llm-jax generate --num-beams` end to end."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the `hf` extra (transformers + CPU torch) is not installed")
transformers = pytest.importorskip("transformers", reason="the `hf` extra (transformers) is not installed")

from helpers import run_cli  # noqa: E402
from llm_jax.infer.beam import beam_search  # noqa: E402
from llm_jax.infer.decode import generate  # noqa: E402
from llm_jax.infer.load import load_workdir  # noqa: E402

VOCAB, NEW = 320, 16
# Prompts and EOS ids chosen from this model's greedy output (seed 0, sharpened as below): with EOS_PROMPT and
# EOS, beams end on EOS after 3 to 8 tokens and the three early_stopping rules stop after different step counts.
PROMPT, EOS_PROMPT, EOS = [37, 235, 72, 255, 203], [281, 178, 276, 254, 252], 227


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(transformers model, loaded work directory, its path): GPT-2 with its blocks' weights x6 and final norm
    x3, so its next-token distributions are peaked and beam search departs from greedy."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2, n_head=4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("transformer.h.") and p.ndim == 2:
                p.mul_(6.0)
        model.transformer.ln_f.weight.mul_(3.0)
    model.eval()
    hf_dir = str(tmp_path_factory.mktemp("gpt2"))
    model.save_pretrained(hf_dir)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(["to be or not to be, that is the question"] * 4, trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(os.path.join(hf_dir, "tokenizer.json"))
    workdir = os.path.join(str(tmp_path_factory.mktemp("wd")), "run")
    proc = run_cli("convert", "from-hf", "--hf-dir", hf_dir, "--out", workdir, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return model, load_workdir(workdir), workdir


def hf_beams(model, prompt, num_beams, num_return, length_penalty, eos, early_stopping=False):
    """transformers' hypotheses as (new ids with EOS, score) best first, and its number of search steps."""
    out = model.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False, num_beams=num_beams,
                         num_return_sequences=num_return, length_penalty=length_penalty, eos_token_id=eos,
                         early_stopping=early_stopping, pad_token_id=0, output_scores=True,
                         return_dict_in_generate=True)
    lengths = (out.beam_indices >= 0).sum(1).tolist()  # new tokens of each hypothesis, EOS included
    beams = [(out.sequences[i, len(prompt):len(prompt) + n].tolist(), out.sequences_scores[i].item())
             for i, n in enumerate(lengths)]
    return beams, len(out.scores)


def ours(loaded, prompt, num_beams, num_return, length_penalty, eos, early_stopping=False):
    result = beam_search(loaded.model, loaded.params, prompt, NEW, loaded.cfg.model.seq_len, num_beams=num_beams,
                         num_return=num_return, length_penalty=length_penalty, eos_id=eos,
                         early_stopping=early_stopping)
    return [(b.token_ids + [eos] * b.eos, b.score) for b in result.beams], result.steps


def assert_same(got, expected):
    assert [ids for ids, _ in got] == [ids for ids, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-4, rtol=0)


@pytest.mark.parametrize("length_penalty", [1.0, 0.5, 2.0])
def test_matches_transformers_without_eos(converted, length_penalty):
    model, loaded, _ = converted
    expected, steps = hf_beams(model, PROMPT, 4, 2, length_penalty, None)
    got, our_steps = ours(loaded, PROMPT, 4, 2, length_penalty, None)
    assert_same(got, expected)
    assert our_steps == steps == NEW and all(len(ids) == NEW for ids, _ in got)
    greedy = generate(loaded.model, loaded.params, [PROMPT], NEW, loaded.cfg.model.seq_len).new_ids[0]
    assert got[0][0] != greedy  # the search finds a better sequence than greedy: a real test of beam search


@pytest.mark.parametrize("length_penalty,early_stopping", [(1.0, False), (1.0, True), (1.0, "never"),
                                                           (2.0, False), (-1.0, False)])
def test_matches_transformers_with_eos_and_early_stopping(converted, length_penalty, early_stopping):
    model, loaded, _ = converted
    expected, steps = hf_beams(model, EOS_PROMPT, 4, 3, length_penalty, EOS, early_stopping)
    got, our_steps = ours(loaded, EOS_PROMPT, 4, 3, length_penalty, EOS, early_stopping)
    assert_same(got, expected)
    assert our_steps == steps
    if length_penalty == 1.0:  # finished hypotheses win, and each rule stops the search at its own step
        assert any(ids[-1] == EOS for ids, _ in got)
        assert steps == {False: 13, True: 6, "never": NEW}[early_stopping]


def test_one_beam_is_greedy(converted):
    _, loaded, _ = converted
    for prompt, eos in ((PROMPT, None), (EOS_PROMPT, EOS)):
        greedy = generate(loaded.model, loaded.params, [prompt], NEW, loaded.cfg.model.seq_len, eos_id=eos)
        (beam,) = beam_search(loaded.model, loaded.params, prompt, NEW, loaded.cfg.model.seq_len, num_beams=1,
                              eos_id=eos).beams
        assert beam.token_ids == greedy.new_ids[0]
    assert beam.eos and len(beam.token_ids) < NEW  # the EOS case stopped early


def test_cli_num_beams(converted):
    _, loaded, workdir = converted
    proc = run_cli("generate", "--workdir", workdir, "--prompt", "to be", "--max-new-tokens", "6",
                   "--temperature", "0", "--num-beams", "3", "--length-penalty", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    prompt = loaded.tokenizer.encode("to be")
    expected = beam_search(loaded.model, loaded.params, prompt, 6, loaded.cfg.model.seq_len, num_beams=3,
                           length_penalty=0.5, eos_id=loaded.tokenizer.eos_id, num_return=3).beams
    assert [b["token_ids"] for b in out["beams"]] == [b.token_ids for b in expected]
    np.testing.assert_allclose([b["score"] for b in out["beams"]], [b.score for b in expected], atol=1e-5)
    assert out["completion"] == out["beams"][0]["text"] == loaded.tokenizer.decode(expected[0].token_ids)
    bad = run_cli("generate", "--workdir", workdir, "--prompt", "to be", "--num-beams", "3", "--top-k", "5")
    assert bad.returncode == 2 and "--num-beams (beam search) is deterministic" in bad.stderr
