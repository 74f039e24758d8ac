"""Preemption: SIGTERM or SIGINT asks the loop to finish its step, checkpoint synchronously and exit.

The process then exits with EXIT_PREEMPTED (75, EX_TEMPFAIL from sysexits.h), which launch scripts treat as
"requeue me": rerunning the same command resumes from that checkpoint. A second signal while the checkpoint
is being written is ignored — killing the save would lose the step just finished.
"""

from __future__ import annotations

import signal
import threading

EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):  # noqa: N818 (a normal way for a run to end, not an error)
    """Raised by the loop after the preemption checkpoint is written."""

    def __init__(self, step: int, signal_name: str):
        super().__init__(f"{signal_name} received: checkpoint written at step {step}; exiting with status "
                         f"{EXIT_PREEMPTED} so the job can be requeued (the same command resumes it)")
        self.step = step


class PreemptionWatcher:
    """Context manager installing SIGTERM/SIGINT handlers that only set a flag (main thread only)."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._previous = {}

    def _handler(self, signum, frame):
        if not self.requested:
            self.requested, self.signal_name = True, signal.Signals(signum).name

    def __enter__(self) -> "PreemptionWatcher":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
