"""`llm-jax quantize` end to end: every method writes a normal work directory that `generate` and
`eval perplexity` use as they are, the checkpoint shrinks as promised, and bad requests are one clear error."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from helpers import run_cli, small_config
from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.eval.perplexity import perplexity
from llm_jax.fileio import atomic_write
from llm_jax.infer.load import load_workdir
from llm_jax.models import build_model
from llm_jax.quant.command import QuantizeError, quantize_workdir

QUIET = dict(log=lambda _: None)


def test_gptq_cli_then_generate_on_the_result(trained, small_corpus, tmp_path):
    _, workdir = trained
    out = tmp_path / "gptq"
    proc = run_cli("quantize", "--workdir", workdir, "--out", out, "--method", "gptq", "--group-size", "16",
                   "--calibration", small_corpus, "--calibration-samples", "16", "--act-order", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["method"] == "gptq" and info["weight_quant"] == "int4" and info["calibration_tokens"] == 16 * 16
    assert info["param_bytes_after"] < 0.5 * info["param_bytes_before"] and info["seconds"] > 0
    assert "gptq layers/mlp/wo layer 1: output error" in proc.stderr  # progress per layer
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["weight_quant"] == "int4" and cfg["model"]["quant_group_size"] == 16
    gen = run_cli("generate", "--workdir", out, "--prompt", "KING:", "--max-new-tokens", "5", "--temperature", "0",
                  "--json")
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert json.loads(gen.stdout.strip().splitlines()[-1])["new_tokens"] == 5


@pytest.fixture(scope="module")
def scored(trained, small_corpus):
    """score(work directory) -> perplexity of 400 tokens of a scene; and the float model's."""
    _, workdir = trained
    text = open(os.path.join(small_corpus, "scene039.txt")).read()

    def score(path):
        loaded = load_workdir(path)
        return perplexity(loaded.model, loaded.params, loaded.tokenizer.encode(text)[:400], 16)["perplexity"]
    return score, score(workdir)


@pytest.mark.parametrize("method,limit", [("int8", 0.01), ("int4", 0.15), ("nf4", 0.15)])
def test_round_to_nearest_methods_keep_perplexity_close(trained, scored, tmp_path, method, limit):
    _, workdir = trained
    info = quantize_workdir(workdir, str(tmp_path / method), method, 16, **QUIET)
    assert info["group_size"] == (None if method == "int8" else 16) and info["step"] == 20
    score, float_ppl = scored
    assert abs(score(info["out"]) / float_ppl - 1) < limit


def _float_workdir(tokenizer_from: str, path: str) -> str:
    """A float work directory of a 2-layer d 128 model with a 4,096-token vocabulary (4.2 MB of parameters, so
    the checkpoint's fixed overhead does not blur the ratio), random weights, the trained run's tokenizer."""
    cfg = small_config(d_model=128, vocab_size=4096, n_layers=2, n_heads=4, ffn="swiglu", use_bias=False)
    params = nn.unbox(build_model(cfg.model).init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"])
    os.makedirs(path)
    checkpoint.save_params(path, params)
    for name in os.listdir(tokenizer_from):
        if name.startswith("tokenizer"):
            shutil.copy(os.path.join(tokenizer_from, name), path)
    atomic_write(os.path.join(path, "config.json"), config_lib.to_json(cfg))
    return path


def test_checkpoint_bytes_shrink_to_the_promised_ratios(trained, tmp_path):
    _, workdir = trained
    float_dir = _float_workdir(workdir, str(tmp_path / "float"))
    ratios = {m: quantize_workdir(float_dir, str(tmp_path / m), m, 64, **QUIET)["ratio"] for m in ("int8", "int4")}
    assert ratios["int8"] < 0.55 and ratios["int4"] < 0.3, ratios


def test_bad_requests_are_one_clear_error(trained, tmp_path):
    _, workdir = trained
    bad = run_cli("quantize", "--workdir", workdir, "--out", tmp_path / "x", "--method", "int3")
    assert bad.returncode == 2 and "invalid choice: 'int3'" in bad.stderr
    with pytest.raises(QuantizeError, match=r"--group-size 24: model.quant_group_size=24 must divide"):
        quantize_workdir(workdir, str(tmp_path / "g"), "int4", 24, **QUIET)
    with pytest.raises(QuantizeError, match="must be an even integer"):
        quantize_workdir(workdir, str(tmp_path / "g"), "nf4", 1, **QUIET)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(QuantizeError, match="is not empty"):
        quantize_workdir(workdir, str(tmp_path / "full"), "int8", **QUIET)
    with pytest.raises(QuantizeError, match="unknown|choose one of"):
        quantize_workdir(workdir, str(tmp_path / "m"), "int2", **QUIET)
    with pytest.raises(QuantizeError, match="too few"):
        quantize_workdir(workdir, str(tmp_path / "c"), "gptq", 16, calibration=os.path.join(workdir, "config.json"),
                         samples=10_000, length=16, **QUIET)
    done = quantize_workdir(workdir, str(tmp_path / "q"), "int8", **QUIET)["out"]
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_workdir(done, str(tmp_path / "qq"), "int4", 16, **QUIET)
    assert not (tmp_path / "g").exists() and not (tmp_path / "m").exists() and not (tmp_path / "c").exists()
