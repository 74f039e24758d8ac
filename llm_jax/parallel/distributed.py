"""Multi-process runs: `jax.distributed` initialisation from the environment, and agreeing on decisions.

Where the process layout comes from, in order:
- explicit: LLM_JAX_COORDINATOR=host:port, LLM_JAX_NUM_PROCESSES=N, LLM_JAX_PROCESS_ID=i (launch/local.sh,
  GKE manifests);
- SLURM (SLURM_JOB_ID with SLURM_NTASKS > 1), Cloud TPU VMs with several workers (TPU_WORKER_HOSTNAMES), or
  multi-slice (MEGASCALE_COORDINATOR_ADDRESS): JAX's own cluster detection reads them;
- otherwise a single process, and nothing is initialised.
LLM_JAX_LOCAL_DEVICES=K gives each process K CPU devices (gloo collectives), for tests on one machine.
LLM_JAX_INIT_TIMEOUT (default 300 s) bounds the wait for all processes to join; LLM_JAX_HEARTBEAT_TIMEOUT
(default 30 s) bounds how long a dead, hung or unreachable process goes unnoticed.

A dead peer ends the run with the project's own one-line error and EXIT_PEER_LOST (76), never JAX's C++ abort
(docs/reliability.md, "Multi-process failures"):
- `Watchdog`: a daemon thread per process heartbeats through JAX's key-value store. Process 0 watches every
  process, the others watch process 0; a process that stops with an error posts its status, so the others
  stop at once with its reason instead of waiting for a timeout. JAX's own heartbeat timeout is set to
  2 x LLM_JAX_HEARTBEAT_TIMEOUT + 10 s so that the watchdog always decides first.
- a collective that fails in the main thread (`peer_failure`) is reported the same way;
- `finish` ends a failed process with `os._exit` after flushing its message, skipping JAX's exit-time shutdown
  barrier (which would wait for the dead peer and then abort);
- the one case no in-process code can catch — JAX aborts every process at once when process 0 (which hosts the
  coordination service) dies — is turned into the same error by the supervising parent (`agent.py`).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

from llm_jax.errors import EXIT_PEER_LOST, EXIT_PREEMPTED, PeerLostError, one_line

HEARTBEAT_INTERVAL = 1.0  # seconds between heartbeats
_watchdog: "Watchdog | None" = None


def heartbeat_timeout() -> float:
    return float(os.environ.get("LLM_JAX_HEARTBEAT_TIMEOUT", "30"))


def detect(env=None) -> dict | None:
    """Keyword arguments for jax.distributed.initialize, {} to let JAX detect the cluster, or None."""
    env = os.environ if env is None else env
    if env.get("LLM_JAX_COORDINATOR"):
        return {"coordinator_address": env["LLM_JAX_COORDINATOR"],
                "num_processes": int(env.get("LLM_JAX_NUM_PROCESSES", "1")),
                "process_id": int(env.get("LLM_JAX_PROCESS_ID", "0"))}
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
        return {}
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return {}
    if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return {}
    return None


def initialize(log=print) -> None:
    """Joins the multi-process run the environment describes (no-op for a single process)."""
    spec = detect()
    if spec is None:
        return
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only used by CPU devices
    if os.environ.get("LLM_JAX_LOCAL_DEVICES"):
        jax.config.update("jax_num_cpu_devices", int(os.environ["LLM_JAX_LOCAL_DEVICES"]))
    bound = heartbeat_timeout()
    jax.distributed.initialize(**spec, initialization_timeout=int(os.environ.get("LLM_JAX_INIT_TIMEOUT", "300")),
                               heartbeat_timeout_seconds=int(2 * bound + 10))
    log(f"distributed: process {jax.process_index()} of {jax.process_count()}, {jax.local_device_count()} local "
        f"of {jax.device_count()} devices")
    global _watchdog
    if jax.process_count() > 1:
        from jax._src import distributed as jax_distributed  # the client is not public API (jax 0.10.2)
        _watchdog = Watchdog(jax_distributed.global_state.client, jax.process_index(), jax.process_count(), bound)
        _watchdog.start()


def is_primary() -> bool:
    import jax
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """True if `flag` is true on any process (every process must call this at the same point)."""
    import jax
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]), tiled=True)))


def barrier(name: str) -> None:
    import jax
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


# What a collective reports when the process at the other end vanished (gloo, gRPC, NCCL, the TPU runtime).
_LOST_PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "UNAVAILABLE",
                    "DEADLINE_EXCEEDED", "Socket closed", "connection refused", "peer", "ABORTED")


def active() -> bool:
    """True in a multi-process run (the watchdog is running)."""
    return _watchdog is not None


def peer_failure(e: BaseException) -> PeerLostError | None:
    """The error to report when `e` is a collective failing because a peer vanished, else None (an
    out-of-memory or a compile error is not a lost peer: requeueing would only repeat it)."""
    if _watchdog is None or type(e).__name__ not in ("JaxRuntimeError", "XlaRuntimeError"):
        return None
    if not any(sign.lower() in str(e).lower() for sign in _LOST_PEER_SIGNS):
        return None
    return PeerLostError(f"a collective operation failed, most likely because another process of this run died "
                         f"({one_line(e, 200)}); rerun to resume from the last checkpoint")


def finish(status: int, message: str = "") -> int:
    """End of a command: in a multi-process run, tell the other processes how this one ended and, when it
    failed, leave at once (`os._exit`) so that JAX's exit-time shutdown cannot hang on a dead peer. Process 0
    hosts the coordination service, so after a preemption (75) it first waits, for at most the heartbeat bound,
    until every process has said it is done — leaving earlier would abort the slower ones from C++."""
    if _watchdog is None:
        return status
    _watchdog.stop(status, message)
    if status != 0:
        if status == EXIT_PREEMPTED and _watchdog.index == 0:
            _watchdog.wait_for_peers(_watchdog.bound)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


class Watchdog:
    """Heartbeats through the coordination service's key-value store and ends this process with one line when a
    peer stops beating or reports a failure. Keys: `llm_jax/beat/<i>` (a counter) and `llm_jax/exit/<i>`
    (`status message`, posted by a process that is stopping). A peer's posted status decides ours:
    0 — it finished, no longer watched; 75 — preempted: we should be too within the heartbeat bound, else 76;
    76 — it lost a peer: 76; anything else (1, 2, 3, 74: a bug, bad input, a halt, storage) — the same status,
    so that a failure that would repeat is not requeued forever as a lost peer."""

    def __init__(self, client, index: int, count: int, bound: float, interval: float = HEARTBEAT_INTERVAL):
        self.client, self.index, self.count, self.bound, self.interval = client, index, count, bound, interval
        self.watched = range(count) if index == 0 else [0]
        self._seen: dict[int, tuple[str | None, float]] = {}
        self._preempted_since: dict[int, float] = {}
        self._last_ok = time.monotonic()
        self._error = "no error reported"
        self._stopped = threading.Event()
        self._ending = threading.Lock()  # one process, one final line
        self._beats = 0

    def start(self) -> None:
        for target in (self._beat_loop, self._monitor_loop):
            threading.Thread(target=target, name=f"llm_jax-{target.__name__[1:]}", daemon=True).start()

    def _post_exit(self, status: int, message: str) -> None:
        """Posts this process's end; bounded, since a frozen coordinator would block the call forever."""
        def post():
            try:
                self.client.key_value_set(f"llm_jax/exit/{self.index}", f"{status} {message}".strip(),
                                          allow_overwrite=True)
            except Exception:  # noqa: BLE001 (the service may be gone already: nothing more to tell)
                pass
        poster = threading.Thread(target=post, daemon=True)
        poster.start()
        poster.join(timeout=5)

    def stop(self, status: int, message: str = "") -> None:
        """Stops watching and posts this process's end (the others then stop watching it, or stop with it)."""
        with self._ending:
            if self._stopped.is_set():
                return
            self._stopped.set()
        self._post_exit(status, message)

    def wait_for_peers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if len(self.client.key_value_dir_get("llm_jax/exit/")) >= self.count:
                    return
            except Exception:  # noqa: BLE001
                return
            time.sleep(self.interval / 4)

    def _beat_loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self._beats += 1
                self.client.key_value_set(f"llm_jax/beat/{self.index}", str(self._beats), allow_overwrite=True)
                beats = dict(self.client.key_value_dir_get("llm_jax/beat/")) if self.index == 0 else \
                    {"llm_jax/beat/0": self._try_get("llm_jax/beat/0")}  # O(1) per process, O(N) on process 0
                exits = dict(self.client.key_value_dir_get("llm_jax/exit/"))
            except Exception as e:  # noqa: BLE001 (judged by the monitor: no successful round for too long)
                self._error = one_line(e, 200)
                continue
            self._last_ok = now = time.monotonic()
            self._judge_exits(exits, now)
            self._judge_beats(beats, now)

    def _judge_exits(self, exits: dict, now: float) -> None:
        for key, value in sorted(exits.items()):
            peer, (status, _, why) = int(key.rsplit("/", 1)[1]), value.partition(" ")
            if peer == self.index:
                continue
            reason = f"process {peer} stopped with status {status}" + (f": {why}" if why else "")
            if status == "0":
                self._seen[peer] = ("done", float("inf"))
            elif status == str(EXIT_PREEMPTED):
                self._seen[peer] = ("done", float("inf"))  # it checkpointed; we should be preempted too
                since = self._preempted_since.setdefault(peer, now)
                if now - since > self.bound:
                    self._end(EXIT_PEER_LOST, f"lost another process of this run: {reason}, and this one was not "
                                              f"preempted within {self.bound:.0f} s")
            else:
                code = int(status) if status.isdigit() and int(status) < EXIT_PREEMPTED else EXIT_PEER_LOST
                self._end(code, f"stopping with another process of this run: {reason}")

    def _judge_beats(self, beats: dict, now: float) -> None:
        for peer in self.watched:
            if peer == self.index or self._seen.get(peer, ("", 0.0))[0] == "done":
                continue
            value = beats.get(f"llm_jax/beat/{peer}")
            if peer not in self._seen or self._seen[peer][0] != value:
                self._seen[peer] = (value, now)
            elif now - self._seen[peer][1] > self.bound:
                self._end(EXIT_PEER_LOST, f"lost another process of this run: process {peer} sent no heartbeat "
                                          f"for {self.bound:.0f} s (it died, hung or is unreachable)")

    def _try_get(self, key: str) -> str | None:
        try:
            return self.client.key_value_try_get(key)
        except Exception as e:  # noqa: BLE001
            if "NOT_FOUND" in str(e):
                return None
            raise

    def _monitor_loop(self) -> None:
        while not self._stopped.wait(self.interval):
            silent = time.monotonic() - self._last_ok
            if silent > self.bound:
                self._end(EXIT_PEER_LOST, f"lost another process of this run: no answer from the coordination "
                                          f"service on process 0 for {silent:.0f} s ({self._error})")

    def _end(self, status: int, message: str) -> None:
        with self._ending:
            if self._stopped.is_set():
                return
            self._stopped.set()
        sys.stdout.flush()
        advice = " — rerun to resume from the last checkpoint" if status == EXIT_PEER_LOST else ""
        print(f"error: {message}; exiting with status {status}{advice}", file=sys.stderr, flush=True)
        self._post_exit(status, message)  # tell the others why, and give them a moment to read it before this
        if self.index == 0:               # process (the coordinator) disappears
            self.wait_for_peers(2 * self.interval)
        os._exit(status)
