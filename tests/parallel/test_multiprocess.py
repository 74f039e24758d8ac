"""Several processes on localhost as one JAX run (gloo collectives): same losses as one process, and a dead
process brings the others down within a bounded time."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import REPO
from llm_jax.errors import EXIT_PEER_LOST
from llm_jax.parallel.distributed import detect


def args(corpus, workdir, steps=12, every=6):
    return ["--workdir", str(workdir), f"--config.data.corpus={corpus}", "--config.model.vocab_size=384",
            "--config.model.seq_len=16", "--config.model.d_model=32", "--config.model.n_layers=2",
            "--config.model.n_heads=4", f"--config.train.steps={steps}", "--config.train.batch_size=8",
            "--config.train.warmup_steps=2", "--config.train.log_every=2", "--config.train.eval_every=0",
            "--config.train.eval_batches=2", f"--config.checkpoint.every={every}", "--config.mesh.data=2",
            "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r.get("loss") for r in map(json.loads, f)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_detects_the_process_layout_from_the_environment():
    assert detect({}) is None
    assert detect({"LLM_JAX_COORDINATOR": "10.0.0.1:1234", "LLM_JAX_NUM_PROCESSES": "4", "LLM_JAX_PROCESS_ID": "2"}) \
        == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2}
    assert detect({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}) == {}
    assert detect({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
    assert detect({"TPU_WORKER_HOSTNAMES": "w0,w1"}) == {}


def test_two_processes_of_four_devices_match_one_process_of_eight(small_corpus, tmp_path):
    reference = tmp_path / "one"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "llm_jax", "train", *args(small_corpus, reference)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    workdir = tmp_path / "two"
    env = dict(os.environ, PYTHON=sys.executable, LOCAL_DEVICES="4")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(["bash", "launch/local.sh", "2", *args(small_corpus, workdir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "[0] distributed: process 0 of 2, 4 local of 8 devices" in proc.stdout
    assert "[1] distributed: process 1 of 2" in proc.stdout
    expected, got = losses(reference), losses(workdir)
    assert sorted(got) == sorted(expected) == [0, 2, 4, 6, 8, 10, 12]
    for step, loss in expected.items():
        if loss is not None:
            assert got[step] == pytest.approx(loss, abs=1e-5), step
    assert sorted(os.listdir(workdir / "checkpoints")) == ["12", "6"]  # written once, by both processes' shards


def start_pair(corpus, workdir, env=None):
    """Two `llm-jax train` processes of one run, each supervised by its agent (agent.py)."""
    port, procs = free_port(), []
    for i in range(2):
        full = dict(os.environ, LLM_JAX_COORDINATOR=f"127.0.0.1:{port}", LLM_JAX_NUM_PROCESSES="2",
                    LLM_JAX_PROCESS_ID=str(i), LLM_JAX_LOCAL_DEVICES="4", JAX_PLATFORMS="cpu", **(env or {}))
        full.pop("XLA_FLAGS", None)
        procs.append(subprocess.Popen([sys.executable, "-m", "llm_jax", "train",
                                       *args(corpus, workdir, steps=100000, every=1000)],
                                      cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 300
    while not (workdir / "metrics.jsonl").is_file() or len((workdir / "metrics.jsonl").read_text().splitlines()) < 4:
        assert time.time() < deadline and all(p.poll() is None for p in procs), procs[0].stderr.read()[-2000:]
        time.sleep(0.1)
    return procs


@pytest.mark.fault(fault="multi-process run: one process is killed (`kill -9`): a worker, or process 0 (the coordinator)",
                   outcome="the survivor exits 76 in under 60 s with one `error:` line; no C++ abort text")
@pytest.mark.parametrize("victim", [1, 0], ids=["a worker dies", "the coordinator dies"])
def test_when_a_process_dies_the_other_exits_76_with_one_line_within_60_seconds(small_corpus, tmp_path, victim, observe):
    procs = start_pair(small_corpus, tmp_path / "run")
    procs[victim].send_signal(signal.SIGKILL)  # the agent; its worker dies with it (PR_SET_PDEATHSIG)
    killed = time.time()
    _, err = procs[1 - victim].communicate(timeout=120)
    elapsed = time.time() - killed
    observe(procs[1 - victim].returncode, err)
    last = err.strip().splitlines()[-1]
    assert procs[1 - victim].returncode == EXIT_PEER_LOST and elapsed < 60, (elapsed, err[-2000:])
    assert last.startswith("error: ") and ("another process of this run" in last), err[-2000:]
    assert "Check failure" not in err and "Terminating process" not in err, err[-3000:]


@pytest.mark.fault(fault="multi-process run: one process frozen (SIGSTOP): alive, silent, its connections open",
                   outcome="the heartbeat watchdog ends the other with status 76 soon after the 8 s bound")
def test_a_frozen_peer_is_found_by_the_heartbeat_watchdog(small_corpus, tmp_path, observe):
    psutil = pytest.importorskip("psutil")
    procs = start_pair(small_corpus, tmp_path / "run", env={"LLM_JAX_HEARTBEAT_TIMEOUT": "8"})
    worker = psutil.Process(procs[1].pid).children()[0]
    worker.send_signal(signal.SIGSTOP)  # alive but silent: no connection closes, only the heartbeat stops
    stopped = time.time()
    try:
        _, err = procs[0].communicate(timeout=120)
    finally:
        worker.kill()
        procs[1].kill()
    assert procs[0].returncode == EXIT_PEER_LOST and time.time() - stopped < 8 + 20, err[-2000:]
    observe(procs[0].returncode, err)
    assert "process 1 sent no heartbeat for 8 s" in err.strip().splitlines()[-1], err[-2000:]


def test_local_launcher_dry_run(tmp_path):
    proc = subprocess.run(["bash", "launch/local.sh", "--dry-run", "3", "--workdir", "runs/x",
                           "--config.mesh.data=3"], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PORT="4321", LOCAL_DEVICES="2", PYTHON="python3"))
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(f"LLM_JAX_COORDINATOR=127.0.0.1:4321 LLM_JAX_NUM_PROCESSES=3 LLM_JAX_PROCESS_ID={i} "
                               "LLM_JAX_LOCAL_DEVICES=2 JAX_PLATFORMS=cpu python3 -m llm_jax train --workdir runs/x")
    bad = subprocess.run(["bash", "launch/local.sh", "zero"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
