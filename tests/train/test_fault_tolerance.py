"""Fault tests that really do it: kill -9 and resume, resume onto another mesh, SIGTERM, damaged checkpoints,
injected NaN, loss spikes. Training runs are `python -m llm_jax train` subprocesses."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import REPO, small_config
from llm_jax.train.metrics import read_metrics
from llm_jax.errors import EXIT_HALTED, EXIT_PREEMPTED

STEPS = 40
KEYS = ("loss", "grad_norm", "learning_rate", "eval_loss", "loss_scale")


def train_args(corpus, workdir, *extra):
    return ["train", "--workdir", str(workdir), f"--config.data.corpus={corpus}", "--config.model.vocab_size=384",
            "--config.model.seq_len=16", "--config.model.d_model=32", "--config.model.n_layers=2",
            "--config.model.n_heads=4", "--config.model.dropout=0.1", f"--config.train.steps={STEPS}",
            "--config.train.batch_size=8", "--config.train.warmup_steps=4", "--config.train.log_every=1",
            "--config.train.eval_every=0", "--config.train.eval_batches=2", "--config.checkpoint.every=10",
            "--config.checkpoint.keep=10", *extra]


INJECT = os.path.join(REPO, "tests", "faults", "inject.py")


def start(args, env=None):
    """`llm-jax ARGS`; with LLM_JAX_FAULTS in `env`, through the fault-injection wrapper."""
    argv = [INJECT] if env and "LLM_JAX_FAULTS" in env else ["-m", "llm_jax"]
    return subprocess.Popen([sys.executable, *argv, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, **(env or {})))


def run(args, env=None):
    proc = start(args, env)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def wait_for_step(workdir, step, proc, timeout=300, committed=None):
    """Waits until metrics.jsonl reaches `step` (and checkpoint `committed` has been renamed into place)."""
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if committed and not os.path.isdir(os.path.join(workdir, "checkpoints", str(committed))):
            pass
        elif os.path.isfile(path):
            with open(path) as f:
                steps = [json.loads(line)["step"] for line in f if line.strip()]
            if steps and steps[-1] >= step:
                return steps[-1]
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    raise TimeoutError(f"the run never reached step {step}")


def final_metrics(workdir):
    """The last record of every step (a resumed run logs redone steps again)."""
    return {r["step"]: {k: r.get(k) for k in KEYS} for r in read_metrics(str(workdir))}


@pytest.fixture(scope="module")
def reference(small_corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference") / "run"
    run(train_args(small_corpus, workdir))
    return final_metrics(workdir)


@pytest.mark.fault(fault="`kill -9` at steps 13, 27 and 36 (checkpoints every 10), then the same command",
                   outcome="resumes from 10 / 20 / 30; every metric of every step equals the uninterrupted run's")
@pytest.mark.parametrize("kill_at", [13, 27, 36])
def test_kill_9_then_resume_equals_the_uninterrupted_run_bit_for_bit(small_corpus, tmp_path, reference, kill_at):
    workdir = tmp_path / "run"
    proc = start(train_args(small_corpus, workdir))
    killed_at = wait_for_step(workdir, kill_at, proc, committed=kill_at // 10 * 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out, err = run(train_args(small_corpus, workdir))
    restored = [int(line.split()[-1]) for line in out.splitlines() if "resuming from the checkpoint at step" in line]
    assert len(restored) == 1 and 10 <= restored[0] <= killed_at  # between checkpoints: steps are redone
    resumed = final_metrics(workdir)
    assert sorted(resumed) == sorted(reference)
    for step in reference:
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])


@pytest.mark.fault(fault="`kill -9` on mesh (8,1,1), resume on (2,2,2) (8 fake CPU devices)",
                   outcome="resharded restore; losses within 1e-5 of the uninterrupted run")
def test_resume_onto_another_mesh_matches_within_1e_5(small_corpus, tmp_path):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    mesh = lambda d, f, t: [f"--config.mesh.data={d}", f"--config.mesh.fsdp={f}", f"--config.mesh.tensor={t}",
                            "--config.model.dropout=0.0"]
    reference = tmp_path / "reference"
    run(train_args(small_corpus, reference, *mesh(8, 1, 1)), env)
    workdir = tmp_path / "run"
    proc = start(train_args(small_corpus, workdir, *mesh(8, 1, 1)), env)
    wait_for_step(workdir, 25, proc, committed=20)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out, _ = run(train_args(small_corpus, workdir, *mesh(2, 2, 2)), env)
    assert "resuming from the checkpoint at step" in out and "'data': 2, 'fsdp': 2, 'expert': 1, 'context': 1, 'tensor': 2" in out
    expected, got = final_metrics(reference), final_metrics(workdir)
    assert sorted(got) == sorted(expected)
    for step in expected:
        if expected[step]["loss"] is not None:
            assert got[step]["loss"] == pytest.approx(expected[step]["loss"], abs=1e-5), step


@pytest.mark.fault(fault="SIGTERM mid-run", outcome="checkpoint at the current step, nothing trained past it, exit 75")
def test_sigterm_writes_a_checkpoint_at_the_current_step_and_exits_75(small_corpus, tmp_path, observe):
    workdir = tmp_path / "run"
    proc = start(train_args(small_corpus, workdir, "--config.train.steps=100000"))
    wait_for_step(workdir, 13, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    observe(proc.returncode, err)
    assert proc.returncode == EXIT_PREEMPTED == 75, err[-2000:]
    step = int(err.split("checkpoint written at step ")[1].split(";")[0])
    assert step >= 13
    listing = {d: sorted(os.listdir(workdir / "checkpoints" / d)) for d in os.listdir(workdir / "checkpoints")}
    assert os.path.isfile(workdir / "checkpoints" / str(step) / "llm_jax_seal.json"), (listing, err[-3000:])
    assert max(r["step"] for r in read_metrics(str(workdir))) == step  # nothing trained past the checkpoint


@pytest.mark.fault(fault="half of the largest file of the latest checkpoint truncated",
                   outcome="warning naming checkpoint 30, quarantined, resumed from 20")
def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(small_corpus, tmp_path):
    workdir = tmp_path / "run"
    run(train_args(small_corpus, workdir, "--config.train.steps=30"))
    files = [os.path.join(r, f) for r, _, fs in os.walk(workdir / "checkpoints" / "30") for f in fs
             if "/d/" in os.path.join(r, f)]
    victim = max(files, key=os.path.getsize)
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)
    out, _ = run(train_args(small_corpus, workdir, "--config.train.steps=40"))
    assert "checkpoint 30 is damaged" in out and "resuming from the checkpoint at step 20" in out
    assert os.path.isdir(workdir / "checkpoints" / "40") and os.listdir(workdir / "checkpoints_bad")


@pytest.mark.fault(fault="NaN injected at step 17, `nonfinite=stop` / `skip`",
                   outcome="stop: exit 3 naming step 17, checkpoint of step 16; skip: update dropped and counted")
def test_injected_nan_stops_with_the_last_good_state_or_is_skipped(small_corpus, tmp_path, observe):
    stop = tmp_path / "stop"
    nan_at_17 = {"LLM_JAX_FAULTS": '{"nan_step": 17}'}
    proc = start(train_args(small_corpus, stop), nan_at_17)
    _, err = proc.communicate(timeout=600)
    observe(proc.returncode, err)
    assert proc.returncode == EXIT_HALTED == 3 and "stopped at step 17: a non-finite loss" in err, err[-2000:]
    assert "the last good state, step 16, is checkpointed" in err
    assert os.path.isfile(stop / "checkpoints" / "16" / "llm_jax_seal.json")
    skip = tmp_path / "skip"
    run(train_args(small_corpus, skip, "--config.train.nonfinite=skip"), nan_at_17)
    records = {r["step"]: r for r in read_metrics(str(skip))}
    assert records[17]["skipped"] == 1 and records[40]["skipped_total"] == 1
    assert records[16]["skipped"] == 0 and np.isfinite(records[40]["loss"])


@pytest.mark.fault(fault="float16 run resumed from step 20", outcome="identical losses and loss scales")
def test_float16_loss_scaling_survives_resume_bit_for_bit(small_corpus, tmp_path):
    args = ("--config.model.dtype=float16", "--config.train.loss_scale_period=5")
    full = tmp_path / "full"
    run(train_args(small_corpus, full, *args))
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    for step in (30, 40):
        shutil.rmtree(resumed / "checkpoints" / str(step))
    out, _ = run(train_args(small_corpus, resumed, *args))
    assert "resuming from the checkpoint at step 20" in out
    expected, got = final_metrics(full), final_metrics(resumed)
    assert {s: got[s] for s in expected} == expected
    assert len({r["loss_scale"] for r in expected.values() if r["loss_scale"]}) > 1  # the scale really moved


@pytest.mark.fault(fault="loss spikes (55x the running mean) with `spike_limit=2`",
                   outcome="two updates skipped, then halted; parameters untouched")
def test_loss_spike_guard_skips_then_stops():
    from llm_jax.train.trainable import build_trainable
    cfg = small_config()
    cfg.train.update(spike_factor=2.0, spike_limit=2, spike_warmup_steps=0)
    trainable = build_trainable(cfg)
    state = trainable.init_state(seed=0)
    batch = {"inputs": np.ones((8, 16), np.int32), "targets": np.ones((8, 16), np.int32),
             "segment_ids": np.ones((8, 16), np.int32)}
    with trainable.activate():
        state = state.replace(step=state.step + 5, loss_ema=jnp.asarray(0.1, jnp.float32))  # loss ~5.5 > 2 x 0.1
        before = jax.device_get(state.params)
        history = []
        for _ in range(4):
            state, m = trainable.train_step(state, trainable.to_device(batch))
            history.append((int(m["skipped"]), bool(m["halted"]), int(state.step)))
    assert history == [(1, False, 6), (1, False, 7), (0, True, 7), (0, True, 7)]
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params))):
        np.testing.assert_array_equal(a, b)  # no spiking update was applied
