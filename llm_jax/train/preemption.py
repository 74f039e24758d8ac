"""Preemption: SIGTERM or SIGINT asks the loop to finish its step, checkpoint synchronously and exit.

The process then exits with EXIT_PREEMPTED (75, EX_TEMPFAIL from sysexits.h), which launch scripts treat as
"requeue me": rerunning the same command resumes from that checkpoint.

- Before the loop is armed (data preparation, compilation, restore) a signal stops the command at once with
  the same status: there is no step to save, and everything those phases write is atomic. The handler raises
  `StartupInterrupted`, a BaseException like KeyboardInterrupt, so that no `except Exception` on the way (a
  retry, a "count bad input and go on") can swallow it; `PreemptionWatcher.__exit__` turns it into Preempted.
- Once armed, a signal only sets a flag; the loop finishes its step, checkpoints it and raises `Preempted`.
- After the first signal, further SIGTERM/SIGINT are ignored until the process exits — also after the loop has
  left the watcher, while the checkpoint is sealed and files are closed — so a second signal can neither lose
  the step just finished nor change the exit status.
"""

from __future__ import annotations

import signal
import threading

from llm_jax.errors import EXIT_PREEMPTED, Preempted

__all__ = ["EXIT_PREEMPTED", "Preempted", "PreemptionWatcher", "SIGNALS"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StartupInterrupted(BaseException):  # noqa: N818 (like KeyboardInterrupt)
    """Raised by the signal handler before the loop is armed; becomes Preempted(None, ...) on the way out."""


class PreemptionWatcher:
    """Context manager installing SIGTERM/SIGINT handlers (main thread only); `arm()` switches them from
    "stop now" to "set a flag for the loop"."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self.armed = False
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:
            return
        self.requested, self.signal_name = True, signal.Signals(signum).name
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if not self.armed:
            raise StartupInterrupted(self.signal_name)

    def arm(self) -> None:
        self.armed = True

    def __enter__(self) -> "PreemptionWatcher":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.requested:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
        # else: on the way out with status 75, signals stay ignored
        if exc_type is StartupInterrupted:
            raise Preempted(None, self.signal_name) from None
