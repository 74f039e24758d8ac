"""`train.profile_steps="A:B"`: a `jax.profiler` trace of training steps A..B (1-based, inclusive) written into
`<workdir>/profile/`, for TensorBoard's profile plugin or XProf (docs/performance.md shows how to read one).
Step A starts after step A-1 has finished and the trace stops once step B's results exist, so it holds whole
steps and nothing of the compilation when A > 1."""

from __future__ import annotations

import os

import jax


def parse_steps(spec: str) -> tuple[int, int] | None:
    """'A:B' -> (A, B); '' -> None. The config checks the format (config.py)."""
    if not spec:
        return None
    first, last = (int(part) for part in spec.split(":"))
    return first, last


class StepProfiler:
    def __init__(self, spec: str, workdir: str, log):
        self.steps, self.directory = parse_steps(spec), os.path.join(workdir, "profile")
        self.log, self.active = log, False

    def before(self, step: int) -> None:
        """Called before running step index `step` (0-based): starts the trace at step A."""
        if self.steps and step + 1 == self.steps[0] and jax.process_index() == 0:
            jax.profiler.start_trace(self.directory)
            self.active = True

    def after(self, done: int, outputs) -> None:
        """Called after step `done` (1-based) was dispatched: stops the trace once step B's results exist."""
        if self.active and done == self.steps[1]:
            jax.block_until_ready(outputs)
            self.close()
            self.log(f"profile of steps {self.steps[0]}-{self.steps[1]} in {self.directory} (open it with "
                     f"`tensorboard --logdir {self.directory}` and the profile plugin, or `xprof {self.directory}`)")

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
