"""Signals: SIGTERM/SIGINT end a run with status 75 and a checkpoint of the step just finished, however many
arrive and whenever they arrive."""

import os
import signal
import time

import pytest
from faultlib import one_clear_line, start, train_args, wait_for_rows

from llm_jax.checkpoint import seal
from llm_jax.errors import EXIT_PREEMPTED


class Done:
    def __init__(self, proc, out, err):
        self.returncode, self.stdout, self.stderr = proc.returncode, out, err


@pytest.mark.fault(fault="SIGTERM, then a second SIGTERM 0.25 s later",
                   outcome="exit 75 (not 143); the last line names the step; that checkpoint is sealed")
def test_a_second_sigterm_changes_nothing(small_corpus, tmp_path, observe):
    workdir = tmp_path / "run"
    proc = start(*train_args(small_corpus, workdir, steps=100000))
    wait_for_rows(workdir, 2, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.25)
    proc.send_signal(signal.SIGTERM)
    done = Done(proc, *proc.communicate(timeout=120))
    observe(done)
    line = one_clear_line(done, EXIT_PREEMPTED, "SIGTERM received: checkpoint written at step", prefix="preempted: ")
    step = int(line.split("checkpoint written at step ")[1].split(";")[0])
    assert seal.is_sealed(workdir / "checkpoints" / str(step)) and not seal.problem(workdir / "checkpoints" / str(step))


@pytest.mark.fault(fault="SIGTERM while the run is still starting (data, compilation)",
                   outcome="exit 75 at once, 'before the first training step'; no checkpoint, config or lock left")
def test_sigterm_before_the_first_step(small_corpus, tmp_path, observe):
    workdir = tmp_path / "run"
    # an empty data cache: the tokenizer and near-duplicate stages must run, so the signal lands during start-up
    # even when an earlier test already prepared this corpus (a cached start-up can beat the signal to step 1)
    proc = start(*train_args(small_corpus, workdir, "--config.data.dedup.near=true", steps=100),
                 env={"LLM_JAX_CACHE": str(tmp_path / "cache")})
    while not proc.stdout.readline().startswith("run "):  # the work directory is claimed: now starting up
        assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    done = Done(proc, *proc.communicate(timeout=120))
    observe(done)
    one_clear_line(done, EXIT_PREEMPTED, "before the first training step", prefix="preempted: ")
    assert sorted(os.listdir(workdir)) == []
