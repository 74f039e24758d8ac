"""One run per work directory: a second run refuses while the first holds the lock; the lock of a killed run is
taken over; every metrics row names the run that wrote it."""

import json
import os
import signal
import time

import pytest
from faultlib import cli, one_clear_line, start, train_args, wait_for_rows

from llm_jax.errors import EXIT_PREEMPTED, EXIT_USAGE
from llm_jax.train.metrics import read_metrics


@pytest.mark.fault(fault="two `llm-jax train` on one work directory at once",
                   outcome="the second refuses in seconds (exit 2) naming the holder; the first runs on; every "
                           "metrics row carries the first run's id")
def test_a_second_run_on_a_locked_workdir_refuses(small_corpus, tmp_path, observe):
    workdir = tmp_path / "run"
    first = start(*train_args(small_corpus, workdir, "--config.checkpoint.every=1000", steps=100000))
    try:
        wait_for_rows(workdir, 2, first)
        holder = json.load(open(workdir / "llm_jax.lock"))
        second = cli(*train_args(small_corpus, workdir, steps=10))
        observe(second)
        one_clear_line(second, EXIT_USAGE, "is in use by another run", f"process {first.pid}", holder["run_id"])
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == EXIT_PREEMPTED
    assert {r["run_id"] for r in read_metrics(str(workdir)) if "loss" in r} == {holder["run_id"]}
    assert not os.path.exists(workdir / "llm_jax.lock")  # released at the end


@pytest.mark.fault(fault="the lock file of a run killed with `kill -9`",
                   outcome="the next run takes the stale lock over with a message and resumes")
def test_a_stale_lock_is_taken_over(small_corpus, tmp_path, observe):
    workdir = tmp_path / "run"
    first = start(*train_args(small_corpus, workdir, steps=100000))
    wait_for_rows(workdir, 2, first)
    while not os.path.isdir(workdir / "checkpoints" / "10"):  # committed (saves finish in the background)
        assert first.poll() is None
        time.sleep(0.05)
    dead = json.load(open(workdir / "llm_jax.lock"))
    first.send_signal(signal.SIGKILL)
    first.wait()
    proc = cli(*train_args(small_corpus, workdir, steps=20))
    observe(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"taking over the work directory lock of run {dead['run_id']}, process {first.pid}" in proc.stdout
    assert "resuming from the checkpoint at step" in proc.stdout
