"""launch/local.sh as a process supervisor: its exit status is the workers' (the first failure's), a failed
worker stops the others, signals are forwarded and waited for, and nothing it started outlives it.

Most cases run a stand-in worker (LLM_JAX = a small Python script) so they take a second each and need no JAX;
the last one runs two real `llm_jax train` processes and preempts them through the launcher."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from helpers import REPO

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="checks processes through /proc")

# argv: worker.py train RECORD_DIR. WORKER_<i> says what process i does:
#   run          wait (60 s at most) for SIGTERM/SIGINT; on one: "checkpoint" for 0.5 s, exit 75
#   exit=S@T     the same, but exit S T seconds after every worker has started (written its pids)
#   sigkill@T    the same, but kill itself with SIGKILL then
#   stubborn     ignore SIGTERM/SIGINT (needs the launcher's SIGKILL)
#   child        like run, and start a `sleep 60` child that ignores SIGTERM/SIGINT: left behind when it exits
# Every signal it receives is appended to RECORD_DIR/signals<i>; its pids go to RECORD_DIR/pids<i>.
WORKER = r'''
import os, signal, subprocess, sys, time
i, record = os.environ["LLM_JAX_PROCESS_ID"], sys.argv[2]
spec = os.environ.get(f"WORKER_{i}", "run")
received = []

def on_signal(signum, frame):
    received.append(signal.Signals(signum).name)
    with open(os.path.join(record, f"signals{i}"), "a") as f:
        f.write(received[-1] + "\n")

for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, signal.SIG_IGN if spec == "stubborn" else on_signal)
pids = [os.getpid()]
if spec == "child":
    pids.append(subprocess.Popen(["sh", "-c", "trap '' TERM INT; exec sleep 60"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL).pid)
with open(os.path.join(record, f"pids{i}.tmp"), "w") as f:
    f.write(" ".join(map(str, pids)))
os.rename(os.path.join(record, f"pids{i}.tmp"), os.path.join(record, f"pids{i}"))
print(f"worker {i} started", flush=True)
while not all(os.path.isfile(os.path.join(record, f"pids{j}"))  # count from when every worker is ready
              for j in range(int(os.environ["LLM_JAX_NUM_PROCESSES"]))):
    time.sleep(0.01)
action, _, after = spec.partition("@")
deadline = time.time() + (float(after) if after else 60)
while time.time() < deadline:
    if received:
        time.sleep(0.5)
        print(f"worker {i}: {received[0]} received, checkpoint written", flush=True)
        sys.exit(75)
    time.sleep(0.02)
if action == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(int(action[5:]) if action.startswith("exit=") else 0)
'''


def default_signals():
    """preexec_fn: the launcher starts with SIGINT/SIGTERM/SIGHUP at their defaults and unblocked, as from a
    terminal. A process inherits ignored and blocked signals, and a bash script cannot trap a signal that was
    ignored when it started; something earlier in a long pytest session can leave SIGINT so in this process."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for init to reap it is not running either
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def session(sid):
    """The live processes of session `sid` (the launcher runs in a session of its own: its workers, their
    process groups and anything they start stay in it)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                members.append(int(entry))
    return members


def kill_session(sid):
    """SIGKILL whatever is left of session `sid`, returning what was there (so a failing test leaves nothing)."""
    members = session(sid)
    for pid in members:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return members


class Launch:
    def __init__(self, tmp_path, grace=30, n=2, **workers):
        self.record = tmp_path / "record"
        self.record.mkdir(parents=True)
        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        env = dict(os.environ, LLM_JAX=f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", PORT="1",
                   LAUNCH_GRACE_SECONDS=str(grace), **{f"WORKER_{i}": spec for i, spec in workers.items()})
        self.n, self.started = n, time.time()
        self.proc = subprocess.Popen(["bash", "launch/local.sh", str(n), str(self.record)], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, preexec_fn=default_signals)

    def wait_started(self):
        deadline = time.time() + 30
        while not all((self.record / f"pids{i}").is_file() for i in range(self.n)):
            assert time.time() < deadline and self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.02)

    def finish(self, timeout=30):
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            left = kill_session(self.proc.pid)
            raise AssertionError(f"the launcher or what it started still runs after {timeout}s: {left}")
        self.elapsed = time.time() - self.started
        return self.proc.returncode

    def pids(self, i):
        return [int(p) for p in (self.record / f"pids{i}").read_text().split()]

    def signals(self, i):
        path = self.record / f"signals{i}"
        return path.read_text().split() if path.is_file() else []

    def assert_nothing_left(self):
        alive = [pid for i in range(self.n) for pid in self.pids(i) if not gone(pid)]
        left = kill_session(self.proc.pid)
        assert alive == [] and left == [], (alive, left, self.out, self.err)


@pytest.mark.fault(fault="`launch/local.sh`: a worker exits 75",
                   outcome="the launcher exits 75 (it used to say 1); the other worker gets one SIGTERM; nothing left running")
def test_a_worker_exiting_75_makes_the_launcher_exit_75(tmp_path, observe):
    launch = Launch(tmp_path, **{"0": "exit=75@0.3", "1": "run"})
    assert launch.finish() == 75, launch.err
    observe(launch.proc.returncode, launch.err)
    assert launch.signals(0) == [] and launch.signals(1) == ["SIGTERM"]  # the survivor was stopped
    assert "[0] worker 0 started" in launch.out and "[1] worker 1: SIGTERM received, checkpoint written" in launch.out
    launch.assert_nothing_left()


@pytest.mark.fault(fault="`launch/local.sh`: a worker fails with status 3 while the other trains on",
                   outcome="the other is stopped (SIGTERM, then SIGKILL for what it left); the launcher exits 3; no orphans")
def test_a_failed_worker_stops_the_others_and_its_status_is_the_launchers(tmp_path, observe):
    launch = Launch(tmp_path, **{"0": "exit=3@0.3", "1": "child"})
    assert launch.finish() == 3, launch.err  # not the 75 the stopped worker exits with
    observe(launch.proc.returncode, launch.err)
    assert launch.signals(1) == ["SIGTERM"] and "[1] worker 1: SIGTERM received" in launch.out
    assert "process 0 exited with status 3; stopping the others" in launch.err
    assert "process 1 exited with status 75" in launch.err
    assert "sent SIGKILL to what process 1 left in its process group" in launch.err
    assert launch.elapsed < 20
    launch.assert_nothing_left()  # the worker's own child too


def test_all_workers_succeeding_is_0_and_a_worker_killed_by_a_signal_is_128_plus_it(tmp_path):
    ok = Launch(tmp_path / "ok", **{"0": "exit=0@0.2", "1": "exit=0@0.2"})
    assert ok.finish() == 0, ok.err
    ok.assert_nothing_left()
    killed = Launch(tmp_path / "killed", **{"0": "run", "1": "sigkill@0.3"})
    assert killed.finish() == 128 + signal.SIGKILL, killed.err
    assert killed.signals(0) == ["SIGTERM"]
    killed.assert_nothing_left()


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    launch = Launch(tmp_path, grace=2, **{"0": "exit=74@0.3", "1": "stubborn"})
    assert launch.finish() == 74, launch.err
    assert "did not exit within 2s: SIGKILL" in launch.err and "process 1 exited with status 137" in launch.err
    assert 2 < launch.elapsed < 20
    launch.assert_nothing_left()


@pytest.mark.fault(fault="`launch/local.sh`: SIGTERM or SIGINT to the launcher, twice 0.2 s apart",
                   outcome="forwarded once to every worker, which checkpoint and exit 75; the launcher waits and exits 75")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_is_forwarded_and_waited_for_even_when_repeated(tmp_path, sig, observe):
    launch = Launch(tmp_path, **{"0": "run", "1": "run"})
    launch.wait_started()
    launch.proc.send_signal(sig)
    time.sleep(0.2)
    launch.proc.send_signal(sig)  # while the workers "checkpoint": changes nothing
    assert launch.finish() == 75, launch.err
    observe(launch.proc.returncode, launch.err)
    name = signal.Signals(sig).name
    for i in range(2):
        assert launch.signals(i) == [name]  # forwarded once
        assert f"[{i}] worker {i}: {name} received, checkpoint written" in launch.out
    assert f"{name} received again: still waiting" in launch.err
    launch.assert_nothing_left()


@pytest.mark.fault(fault="`launch/local.sh` of two real `llm-jax train` processes receives SIGTERM",
                   outcome="both checkpoint (sealed) and exit 75; the launcher exits 75; no orphans")
def test_a_preempted_real_run_checkpoints_and_exits_75(small_corpus, tmp_path, observe):
    workdir = tmp_path / "run"
    args = ["--workdir", str(workdir), f"--config.data.corpus={small_corpus}", "--config.model.vocab_size=384",
            "--config.model.seq_len=16", "--config.model.d_model=32", "--config.model.n_layers=2",
            "--config.model.n_heads=4", "--config.train.steps=100000", "--config.train.batch_size=8",
            "--config.train.warmup_steps=2", "--config.train.log_every=2", "--config.train.eval_every=0",
            "--config.train.eval_batches=2", "--config.checkpoint.every=100000", "--config.mesh.data=2",
            "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
    env = dict(os.environ, PYTHON=sys.executable, LOCAL_DEVICES="4", LAUNCH_GRACE_SECONDS="60")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen(["bash", "launch/local.sh", "2", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=default_signals)
    metrics, deadline = workdir / "metrics.jsonl", time.time() + 300
    while not metrics.is_file() or len(metrics.read_text().splitlines()) < 2:  # step 0's evaluation, step 2
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 120 s after SIGTERM: {kill_session(proc.pid)}")
    left = kill_session(proc.pid)
    assert proc.returncode == 75, out[-3000:]
    observe(proc.returncode, out)
    assert "[0] " in out and "[1] " in out
    sealed = [step for step in os.listdir(workdir / "checkpoints")
              if (workdir / "checkpoints" / step / "llm_jax_seal.json").is_file()]
    assert sealed, os.listdir(workdir / "checkpoints")
    assert left == [], out[-3000:]
