"""Resume faults: a run continues from the newest checkpoint that matches, or refuses in one line; only a
checkpoint that fails its checksums is ever moved aside, and never the run's whole history."""

import json
import os
import shutil

import pytest
from faultlib import cli, data_file, digest, flip_bytes, one_clear_line, train_args

from llm_jax.errors import EXIT_IO, EXIT_USAGE
from llm_jax.train.metrics import read_metrics


@pytest.mark.fault(fault="resume with changed optimizer settings (`train.grad_clip` 1.0 → 0, `train.lr`)",
                   outcome="resumes from step 30, names the changed settings, nothing quarantined")
def test_changed_optimizer_settings_resume(small_corpus, run_copy, observe):
    proc = cli(*train_args(small_corpus, run_copy, "--config.train.grad_clip=0", "--config.train.lr=1e-3", steps=40))
    observe(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming with changed settings: train.grad_clip: 1.0 -> 0.0; train.lr: 0.003 -> 0.001" in proc.stdout
    assert "resuming from the checkpoint at step 30" in proc.stdout
    assert not os.path.exists(run_copy / "checkpoints_bad")
    assert max(r["step"] for r in read_metrics(str(run_copy))) == 40


@pytest.mark.fault(fault="resume with another model width, with and without `config.json`",
                   outcome="refused before any work (exit 2), naming the keys; every file untouched")
@pytest.mark.parametrize("drop_config", [False, True], ids=["config.json present", "config.json deleted"])
def test_another_model_is_refused_and_nothing_changes(small_corpus, run_copy, observe, drop_config):
    if drop_config:
        os.remove(run_copy / "config.json")
    before = digest(run_copy)
    proc = cli(*train_args(small_corpus, run_copy, "--config.model.d_model=64", steps=40))
    observe(proc)
    one_clear_line(proc, EXIT_USAGE, "cannot resume", "model.d_model: 32 -> 64", "--restart")
    assert digest(run_copy) == before


@pytest.mark.fault(fault="transient read errors: the first 2 checkpoint reads fail with EIO",
                   outcome="retried with a warning, resumes from step 30, nothing quarantined")
def test_a_transient_read_error_is_retried(small_corpus, run_copy, observe):
    proc = cli(*train_args(small_corpus, run_copy, steps=40), faults={"restore_errors": 2})
    observe(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("retrying in") == 2 and "resuming from the checkpoint at step 30" in proc.stdout
    assert not os.path.exists(run_copy / "checkpoints_bad")


@pytest.mark.fault(fault="persistent read errors: every checkpoint read fails with EIO",
                   outcome="exit 74 after 3 attempts, one line: intact but unreadable; nothing moved or changed")
def test_a_persistent_read_error_moves_nothing(small_corpus, run_copy, observe):
    before = digest(run_copy / "checkpoints")
    proc = cli(*train_args(small_corpus, run_copy, steps=40), faults={"restore_errors": -1})
    observe(proc)
    one_clear_line(proc, EXIT_IO, "cannot read checkpoint 30", "pass their checksums", "Nothing was moved")
    assert digest(run_copy / "checkpoints") == before and not os.path.exists(run_copy / "checkpoints_bad")


@pytest.mark.fault(fault="same-size corruption: 16 bytes of checkpoint 30's largest data file overwritten",
                   outcome="checksum mismatch found; 30 quarantined with a warning; resumes from 20")
def test_same_size_corruption_is_caught_by_the_checksum(small_corpus, run_copy, observe):
    flip_bytes(data_file(run_copy / "checkpoints" / "30"))
    proc = cli(*train_args(small_corpus, run_copy, steps=40))
    observe(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint 30 is damaged" in proc.stdout and "fails its checksum" in proc.stdout
    assert "resuming from the checkpoint at step 20" in proc.stdout
    assert [name.split("-")[0] for name in os.listdir(run_copy / "checkpoints_bad")] == ["30"]


@pytest.mark.fault(fault="`generate` on a work directory whose newest checkpoint is corrupted",
                   outcome="warns that checkpoint 30 fails its checksum, generates from 20 (nothing moved)")
def test_generate_skips_a_corrupted_checkpoint_with_a_warning(run_copy, observe):
    flip_bytes(data_file(run_copy / "checkpoints" / "30" / "params"))
    proc = cli("generate", "--workdir", run_copy, "--prompt", "ROMEO:", "--max-new-tokens", "4", "--json")
    observe(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "30: params/" in proc.stderr and "fails its checksum" in proc.stderr and "using step 20" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 20
    assert sorted(os.listdir(run_copy / "checkpoints")) == ["10", "20", "30"]


@pytest.mark.fault(fault="every checkpoint corrupted; then `--restart`",
                   outcome="refuses to start from step 0 (exit 2), also when run again; `--restart` moves the old "
                           "run to previous/ and trains from step 0")
def test_all_checkpoints_damaged_needs_restart(small_corpus, run_copy, observe):
    for step in ("10", "20", "30"):
        flip_bytes(data_file(run_copy / "checkpoints" / step))
    proc = cli(*train_args(small_corpus, run_copy, steps=40))
    observe(proc)
    one_clear_line(proc, EXIT_USAGE, "no intact checkpoint is left", "--restart")
    assert sorted(n.split("-")[0] for n in os.listdir(run_copy / "checkpoints_bad")) == ["10", "20", "30"]
    again = cli(*train_args(small_corpus, run_copy, steps=40))  # the same command again: still no step 0
    one_clear_line(again, EXIT_USAGE, "no intact checkpoint is left", "checkpoints_bad/ holds damaged ones")
    assert not os.path.exists(run_copy / "checkpoints" / "10")
    old_metrics = (run_copy / "metrics.jsonl").read_text()
    proc = cli(*train_args(small_corpus, run_copy, "--restart", steps=10))
    observe(proc)
    assert proc.returncode == 0 and "--restart: moved the previous run's" in proc.stdout, proc.stderr[-3000:]
    previous = run_copy / "previous" / os.listdir(run_copy / "previous")[0]
    assert (previous / "metrics.jsonl").read_text() == old_metrics and len(os.listdir(previous / "checkpoints_bad")) == 3
    assert [r["step"] for r in read_metrics(str(run_copy))][0] == 0


@pytest.mark.fault(fault="a `metrics.jsonl` row cut short (the run was killed while writing it)",
                   outcome="the partial row is dropped when the run resumes; the history reads cleanly")
def test_a_row_cut_short_is_dropped(small_corpus, run_copy, observe):
    with open(run_copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 31, "loss": 4.')
    proc = cli(*train_args(small_corpus, run_copy, steps=35))
    observe(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(str(run_copy))
    assert [r["step"] for r in rows][-2:] == [30, 35] and len({r["run_id"] for r in rows}) == 2


@pytest.mark.fault(fault="`checkpoint.restore_from` pointing at another model's run",
                   outcome="exit 2, one line naming the differing arrays (no orbax traceback)")
def test_restore_from_another_model_is_one_line(small_corpus, finished_run, tmp_path, observe):
    proc = cli(*train_args(small_corpus, tmp_path / "new", f"--config.checkpoint.restore_from={finished_run}",
                           "--config.model.d_model=64"))
    observe(proc)
    one_clear_line(proc, EXIT_USAGE, "checkpoint.restore_from=", "does not fit this model", "float32[384, 32] there")
    assert not os.path.exists(tmp_path / "new" / "checkpoints" / "10")
    shutil.rmtree(tmp_path / "new", ignore_errors=True)
