import json
import os

import jax
import numpy as np
import pytest

from helpers import run_cli
from llm_jax.infer.load import load_workdir
from llm_jax.train.loop import train
from llm_jax.train.metrics import read_metrics


def test_export_writes_a_parameters_only_work_directory(trained, tmp_path):
    _, workdir = trained
    out = tmp_path / "export"
    proc = run_cli("export", "--workdir", workdir, "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["step"] == 20 and sorted(os.listdir(out / "checkpoints" / "20")) == [
        "_CHECKPOINT_METADATA", "commit_success.txt", "llm_jax_seal.json", "params"]
    original, exported = load_workdir(workdir), load_workdir(str(out))
    for a, b in zip(jax.tree.leaves(original.params), jax.tree.leaves(exported.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    gen = run_cli("generate", "--workdir", out, "--prompt", "KING:", "--max-new-tokens", "5", "--temperature", "0")
    assert gen.returncode == 0 and gen.stdout.startswith("KING:")
    again = run_cli("export", "--workdir", workdir, "--out", out)
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_restore_from_another_run_params_only_or_full(trained, small_corpus, tmp_path):
    cfg, workdir = trained
    fine = cfg.copy_and_resolve_references()
    fine.checkpoint.restore_from = os.path.join(workdir, "checkpoints", "10")
    logs = []
    train(fine, str(tmp_path / "params"), log=logs.append)
    assert any("starting from" in line and "(step 10, parameters only)" in line for line in logs)
    assert [r["step"] for r in read_metrics(str(tmp_path / "params"))][:2] == [0, 5]  # a fresh run from step 0
    fine.checkpoint.restore_mode = "full"
    fine.train.steps = 25
    logs = []
    train(fine, str(tmp_path / "full"), log=logs.append)
    assert any("(step 10, full state)" in line for line in logs)
    assert [r["step"] for r in read_metrics(str(tmp_path / "full"))] == [15, 20, 25]  # continues at step 10
    fine.checkpoint.restore_from = str(tmp_path / "nowhere")
    from llm_jax.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="no checkpoints/ directory"):
        train(fine, str(tmp_path / "bad"), log=lambda _: None)
