"""The supervising parent of a multi-process `llm-jax train` (one per process, like torchrun's agent).

Why it exists: when process 0 of a JAX multi-process run dies, the coordination service it hosts goes with it
and every other process aborts from C++ at once ("Terminating process because the JAX distributed service
detected fatal errors", exit 134) — JAX documents this, and jaxlib 0.10.2 offers no Python hook (its
`missed_heartbeat_callback` cannot pass its status to Python: std::bad_cast). No code inside the dying process
can report it, so `llm-jax train` in a multi-process environment runs the training in a child process and
stays as a thin parent that never imports JAX:

- it relays the child's output line by line, holding back JAX's C++ log lines about the distributed runtime
  (shown with LLM_JAX_LIBRARY_LOGS=1);
- it forwards SIGTERM/SIGINT (and SIGHUP, as SIGTERM) to the child, which checkpoints and exits 75;
- it exits with the child's status; when the child was aborted by JAX's distributed runtime (SIGABRT after
  its fatal report) it prints the project's one line instead and exits EXIT_PEER_LOST (76); another death by
  a signal is reported as 128 + the signal;
- the child dies with it (PR_SET_PDEATHSIG on Linux), so killing the parent kills the process, as before.

LLM_JAX_SUPERVISE=0 turns the agent off (the training then runs in the launched process itself).
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys

from llm_jax.errors import EXIT_PEER_LOST
from llm_jax.parallel.distributed import detect

WORKER_ENV = "LLM_JAX_WORKER"
FATAL_MARKER = "JAX distributed service detected fatal errors"
# absl C++ log lines: "E1130 12:00:53.510482    5361 coordination_service_agent.cc:289] ..."
CPP_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\] ")
RUNTIME_SOURCES = ("coordination", "preemption", "client.h", "distributed", "grpc")
# the lines such a record continues on: gRPC details, the fatal report's stack trace
CONTINUATION = re.compile(r"^(Additional GRPC error information|:[A-Z_]+:|\*\*\* |\s+@ )")


def should_supervise(env=None) -> bool:
    env = os.environ if env is None else env
    return detect(env) is not None and env.get(WORKER_ENV) != "1" and env.get("LLM_JAX_SUPERVISE", "1") != "0"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the child may outlive a killed parent


class _StderrFilter:
    """Passes the child's stderr through, keeping back the distributed runtime's C++ log lines and, once JAX's
    fatal report starts, everything after it (its stack trace)."""

    def __init__(self, out, show_all: bool):
        self.out, self.show_all = out, show_all
        self.fatal: str | None = None
        self.holding = False
        self.held = collections.deque(maxlen=200)

    def line(self, text: str) -> None:
        if self.show_all:
            self.out.write(text)
            self.out.flush()
        if FATAL_MARKER in text and self.fatal is None:
            self.fatal = text.split("absl::Status:", 1)[-1].strip() if "absl::Status:" in text else text.strip()
        runtime_record = CPP_LOG.match(text) and any(s in text for s in RUNTIME_SOURCES)
        if self.fatal is not None or runtime_record or (self.holding and CONTINUATION.match(text)):
            self.holding = True
            self.held.append(text)
            return
        self.holding = False
        if not self.show_all:
            self.out.write(text)
            self.out.flush()


def _relay(child, out_line, err_line) -> None:
    """Copies the child's stdout and stderr line by line, in the order the lines arrive, until both close."""
    streams = {child.stdout.fileno(): (child.stdout, out_line), child.stderr.fileno(): (child.stderr, err_line)}
    with selectors.DefaultSelector() as selector:
        for fd, (stream, _) in streams.items():
            selector.register(fd, selectors.EVENT_READ)
        pending = {fd: b"" for fd in streams}
        while streams:
            for key, _ in selector.select():
                fd = key.fd
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    selector.unregister(fd)
                    if pending[fd]:
                        streams[fd][1](pending[fd].decode("utf-8", "replace"))
                    del streams[fd]
                    continue
                *lines, pending[fd] = (pending[fd] + chunk).split(b"\n")
                for line in lines:
                    streams[fd][1](line.decode("utf-8", "replace") + "\n")


def supervise(argv: list[str], command: list[str] | None = None) -> int:
    """Runs `python -m llm_jax ARGV` (or `command` + ARGV) as the worker of this process and returns the status
    to exit with."""
    env = dict(os.environ, **{WORKER_ENV: "1", "PYTHONUNBUFFERED": "1"})
    holder: dict = {"child": None, "early": []}

    def forward(signum, frame):  # installed before the child exists: a signal in between is passed on later
        child = holder["child"]
        if child is None:
            holder["early"].append(signum)
            return
        try:
            child.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    stderr = _StderrFilter(sys.stderr, os.environ.get("LLM_JAX_LIBRARY_LOGS", "") not in ("", "0"))

    def out(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        child = holder["child"] = subprocess.Popen(
            [*(command or [sys.executable, "-m", "llm_jax"]), *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent)
        for signum in holder["early"]:
            forward(signum, None)
        _relay(child, out, stderr.line)
        status = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    aborted = status < 0 or status == 134  # SIGABRT, as the C++ runtime ends a process
    if stderr.fatal is not None and aborted:
        print(f"error: lost contact with another process of this run: JAX's distributed runtime reported "
              f"{stderr.fatal[:300]!r} (process 0, which coordinates the run, most likely died); exiting with "
              f"status {EXIT_PEER_LOST} — rerun to resume from the last checkpoint", file=sys.stderr, flush=True)
        return EXIT_PEER_LOST
    if status < 0:
        name = signal.Signals(-status).name
        print(f"error: the training process was killed by {name}", file=sys.stderr, flush=True)
        return 128 - status
    return status
