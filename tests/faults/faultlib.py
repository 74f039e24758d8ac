"""Helpers of the fault-injection suite: real `llm-jax` commands in subprocesses on a tiny model.

Each case asserts the exit status, that the last line of output is one clear message, and that nothing was
lost (checkpoints, metrics, outputs bit-identical where they should be). `inject.py` runs the command with
faults patched in from outside (a flaky file system, a NaN step); everything else is done to real files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

from helpers import REPO

INJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inject.py")
STEPS = 30


def train_args(corpus, workdir, *extra, steps=STEPS):
    return ["train", "--workdir", str(workdir), f"--config.data.corpus={corpus}", "--config.model.vocab_size=384",
            "--config.model.seq_len=16", "--config.model.d_model=32", "--config.model.n_layers=2",
            "--config.model.n_heads=4", f"--config.train.steps={steps}", "--config.train.batch_size=8",
            "--config.train.warmup_steps=2", "--config.train.log_every=5", "--config.train.eval_every=0",
            "--config.train.eval_batches=1", "--config.checkpoint.every=10", "--config.checkpoint.keep=10", *extra]


def command(args, faults=None, env=None):
    """argv and environment of `llm-jax ARGS` (through inject.py when `faults` are given)."""
    argv = [sys.executable, INJECT, *map(str, args)] if faults else [sys.executable, "-m", "llm_jax", *map(str, args)]
    full = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))  # tests read progress lines as they come
    return argv, dict(full, **({"LLM_JAX_FAULTS": json.dumps(faults)} if faults else {}))


def cli(*args, faults=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    argv, full_env = command(args, faults, env)
    return subprocess.run(argv, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)


def start(*args, faults=None, env=None) -> subprocess.Popen:
    argv, full_env = command(args, faults, env)
    return subprocess.Popen(argv, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def one_clear_line(proc, status: int, *fragments: str, prefix: str = "error: ") -> str:
    """The run ended with `status`, its last line is the project's one-line message holding `fragments`, and no
    traceback was printed."""
    out = proc.stdout + proc.stderr
    line = last_line(proc.stderr)
    assert proc.returncode == status, (proc.returncode, out[-3000:])
    assert line.startswith(prefix) and all(f in line for f in fragments), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    return line


def digest(path) -> dict:
    """{relative path: sha256} of every file under `path`: 'nothing changed' is this staying equal."""
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


def wait_for_rows(workdir, rows: int, proc, timeout=300) -> None:
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.isfile(path) and len(open(path).read().splitlines()) >= rows:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    raise TimeoutError(f"{path} never reached {rows} rows")


def data_file(step_dir) -> str:
    """The largest array-data file of a checkpoint (what a bit flip on disk would hit)."""
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs if f"{os.sep}d{os.sep}" in os.path.join(r, f)]
    return max(files, key=os.path.getsize)


def flip_bytes(path, count: int = 16) -> None:
    """Overwrites `count` bytes in the middle of `path` with their complement: same size, other content."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        chunk = f.read(count)
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(255 - b for b in chunk))
