"""The `llm-jax` command as a user types it: bad input, estimate, the default run, generate and eval."""

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO, run_cli

QUICK = ["--config.train.steps=3", "--config.train.warmup_steps=1", "--config.train.eval_batches=1",
         "--config.train.log_every=1"]


@pytest.fixture
def precious_workdir(tmp_path):
    """A work directory holding files that a failed command must not touch."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text("sentinel config")
    (workdir / "metrics.jsonl").write_text('{"step": 1}\n')
    return workdir


def assert_untouched(workdir):
    assert sorted(os.listdir(workdir)) == ["config.json", "metrics.jsonl"]
    assert (workdir / "config.json").read_text() == "sentinel config"
    assert (workdir / "metrics.jsonl").read_text() == '{"step": 1}\n'


def one_error_line(proc):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/nope.py"], "config file 'configs/nope.py' does not exist"),
    (["--config.model.n_layrs=2"], "unknown config key 'model.n_layrs'"),
    (["--config.model.n_heads=7"], "model.n_heads=7 does not divide model.d_model=256"),
    (["--config.train.steps=-1"], "train.steps=-1: must be a positive integer"),
    (["--config.mesh.data=4"], "but there are 1 devices"),
    (["--bogus"], "unrecognised argument '--bogus'"),
])
def test_bad_config_input_gives_one_clear_error_and_touches_nothing(precious_workdir, args, message):
    proc = run_cli("train", "--workdir", precious_workdir, *args)
    assert message in one_error_line(proc)
    assert_untouched(precious_workdir)


def test_empty_corpus_is_an_error(precious_workdir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n\n")
    proc = run_cli("train", "--workdir", precious_workdir, f"--config.data.corpus={empty}")
    assert "yielded no documents" in one_error_line(proc)
    assert_untouched(precious_workdir)


def test_unwritable_workdir_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    proc = run_cli("train", "--workdir", blocker / "run", *QUICK)
    assert "cannot write in directory" in one_error_line(proc) and "Not a directory" in proc.stderr
    assert blocker.read_text() == "a file, not a directory"


def test_estimate_prints_params_and_flops():
    proc = run_cli("estimate", "--config", "configs/gpt2_small.py", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["params"] == 124_439_808
    assert out["non_embedding_params"] == 124_439_808 - 50257 * 768 - 1024 * 768
    assert out["flops_per_token"] > 6 * out["non_embedding_params"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The embedded default (tiny on Shakespeare), cut to 3 steps: the path `make train` takes."""
    workdir = tmp_path_factory.mktemp("default") / "run"
    proc = run_cli("train", "--workdir", workdir, "--json", *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


def test_default_run_trains_the_tiny_config_on_shakespeare(default_run):
    workdir, proc = default_run
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 3 and summary["params"] == 3_749_376
    assert summary["unigram_entropy"] > 4
    assert json.loads((workdir / "config.json").read_text())["name"] == "tiny"
    assert "step 3/3" in proc.stdout


def test_generate_samples_with_every_strategy(default_run):
    workdir, _ = default_run
    outputs = []
    for flags in (["--temperature", "0"], ["--temperature", "0.8", "--top-k", "40"], ["--top-p", "0.9"]):
        proc = run_cli("generate", "--workdir", workdir, "--prompt", "ROMEO:", "--max-new-tokens", "12",
                       "--seed", "1", "--json", *flags)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["prompt"] == "ROMEO:" and 0 < out["new_tokens"] <= 12 and out["step"] == 3
        outputs.append(out["completion"])
    plain = run_cli("generate", "--workdir", workdir, "--prompt", "ROMEO:", "--max-new-tokens", "12", "--seed", "1",
                    "--temperature", "0")
    assert plain.stdout == "ROMEO:" + outputs[0] + "\n"  # plain output: prompt + completion


def test_eval_perplexity(default_run, tmp_path):
    workdir, _ = default_run
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20)
    proc = run_cli("eval", "perplexity", "--workdir", workdir, "--text", text, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["tokens"] > 100 and 1 < out["perplexity"] < 2048 * 1.5


def test_generate_from_a_missing_workdir_is_an_error(tmp_path):
    proc = run_cli("generate", "--workdir", tmp_path, "--prompt", "x")
    assert "has no config.json" in one_error_line(proc)


def test_building_the_command_line_imports_no_jax():
    """Every `llm-jax` process builds every subcommand's parser: importing JAX there would add ~1 s to each one
    (`--help`, argument errors, and the hundreds of subprocesses the suite starts)."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from llm_jax import cli; cli.build_parser(); "
                           "print(sorted(m for m in ('jax', 'flax', 'optax', 'orbax', 'torch') if m in sys.modules))"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
