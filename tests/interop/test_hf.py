"""Reference parity with Hugging Face transformers (torch, CPU): randomly initialised GPT-2 and Llama models
are converted both ways and must give the same float32 logits within 1e-4."""

import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the `hf` extra (transformers + CPU torch) is not installed")
transformers = pytest.importorskip("transformers", reason="the `hf` extra (transformers) is not installed")

from helpers import run_cli  # noqa: E402
from llm_jax.infer.load import load_workdir  # noqa: E402
from llm_jax.interop.hf import ConversionError, family_of, from_hf, to_hf  # noqa: E402

VOCAB = 320


def byte_bpe_tokenizer(directory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from llm_jax.data.corpus import shakespeare_scenes
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(shakespeare_scenes()[:10], trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(os.path.join(directory, "tokenizer.json"))


MODELS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2, n_head=4)),
    "llama_gqa_untied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=500000.0, tie_word_embeddings=False)),
    "llama_mha_tied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)),
    "mixtral_top2": lambda: transformers.MixtralForCausalLM(transformers.MixtralConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
        tie_word_embeddings=False)),
}


def hf_logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


@pytest.fixture(scope="module", params=sorted(MODELS))
def converted(request, tmp_path_factory):
    torch.manual_seed(0)
    model = MODELS[request.param]()
    with torch.no_grad():  # non-trivial norm gains and biases, so a swapped or dropped tensor shows
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    hf_dir = str(tmp_path_factory.mktemp(request.param))
    model.save_pretrained(hf_dir)
    byte_bpe_tokenizer(hf_dir)
    workdir = os.path.join(str(tmp_path_factory.mktemp("wd")), "run")
    proc = run_cli("convert", "from-hf", "--hf-dir", hf_dir, "--out", workdir, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return request.param, model, hf_dir, workdir


def test_logits_match_within_1e_4(converted):
    name, model, _, workdir = converted
    ids = np.random.RandomState(0).randint(0, VOCAB, (2, 40))
    loaded = load_workdir(workdir)
    ours = np.asarray(loaded.model.apply({"params": loaded.params}, ids))
    reference = hf_logits(model, ids)
    assert np.abs(reference).max() > 1e-2  # not a degenerate all-zero comparison
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)
    if name == "llama_gqa_untied":
        assert loaded.cfg.model.n_kv_heads == 2 and loaded.cfg.model.rope_theta == 500000.0
        assert not loaded.cfg.model.tie_embeddings
    if name == "mixtral_top2":  # the same two experts per token in every layer, not only close logits
        assert (loaded.cfg.model.moe_experts, loaded.cfg.model.moe_top_k) == (4, 2)
        _, sown = loaded.model.apply({"params": loaded.params}, ids, mutable=["intermediates"])
        ours_router = np.asarray(sown["intermediates"]["layers"]["moe"]["router_logits"][0])  # (layers, B, L, E)
        model.eval()
        with torch.no_grad():
            hf_router = [r.numpy() for r in model(torch.tensor(ids), output_router_logits=True).router_logits]
        for layer, reference_logits in enumerate(hf_router):
            chosen = np.sort(np.argsort(-ours_router[layer].reshape(-1, 4), axis=-1)[:, :2], axis=-1)
            expected = np.sort(np.argsort(-reference_logits.reshape(-1, 4), axis=-1)[:, :2], axis=-1)
            np.testing.assert_array_equal(chosen, expected)


def test_round_trip_back_to_hugging_face(converted, tmp_path):
    name, model, _, workdir = converted
    out = str(tmp_path / "hf")
    proc = run_cli("convert", "to-hf", "--workdir", workdir, "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    back = type(model).from_pretrained(out)
    ids = np.random.RandomState(1).randint(0, VOCAB, (1, 30))
    np.testing.assert_allclose(hf_logits(back, ids), hf_logits(model, ids), atol=1e-6, rtol=0)
    assert os.path.isfile(os.path.join(out, "tokenizer.json"))


def test_perplexity_matches_hugging_face(converted, tmp_path):
    _, model, hf_dir, workdir = converted
    from tokenizers import Tokenizer
    text = "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n" * 3
    path = tmp_path / "text.txt"
    path.write_text(text)
    proc = run_cli("eval", "perplexity", "--workdir", workdir, "--text", path, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads(proc.stdout.strip().splitlines()[-1])
    ids = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json")).encode(text).ids
    assert ours["tokens"] == len(ids) - 1
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, 64):  # the same 64-token windows as llm-jax eval
        chunk = ids[start:start + 65]
        logits = torch.tensor(hf_logits(model, [chunk[:-1]])[0])
        nll += torch.nn.functional.cross_entropy(logits, torch.tensor(chunk[1:]), reduction="sum").item()
        count += len(chunk) - 1
    assert ours["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_generate_from_a_converted_checkpoint(converted):
    _, model, _, workdir = converted
    proc = run_cli("generate", "--workdir", workdir, "--prompt", "To be", "--max-new-tokens", "5", "--temperature",
                   "0", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    loaded = load_workdir(workdir)
    prompt = loaded.tokenizer.encode("To be")
    expected = model.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False,
                              pad_token_id=0)[0, len(prompt):].tolist()
    eos = loaded.tokenizer.eos_id
    expected = expected[: expected.index(eos)] if eos in expected else expected
    assert out["completion"] == loaded.tokenizer.decode(expected)


def test_unsupported_inputs_are_clear_errors(tmp_path):
    from llm_jax.interop.hf import model_fields_from_hf
    with pytest.raises(ConversionError, match="model_type='bert' is not supported"):
        model_fields_from_hf({"model_type": "bert"})
    with pytest.raises(ConversionError, match="rope_type='su' is not supported"):
        model_fields_from_hf({"model_type": "llama", "rope_parameters": {"rope_type": "su"}})
    with pytest.raises(ConversionError, match="no Hugging Face equivalent"):
        family_of({"positions": "sinusoidal", "norm": "layernorm", "norm_position": "pre", "use_bias": True,
                   "tie_embeddings": True, "ffn": "gelu", "n_kv_heads": 4, "n_heads": 4, "head_dim": 8,
                   "d_model": 32})
    with pytest.raises(ConversionError, match="muP"):
        family_of({"positions": "rope", "norm": "rmsnorm", "norm_position": "pre", "use_bias": False,
                   "ffn": "swiglu", "mup": True})
    proc = run_cli("convert", "from-hf", "--hf-dir", tmp_path, "--out", tmp_path / "out")
    assert proc.returncode == 2 and "has no config.json" in proc.stderr
