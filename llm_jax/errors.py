"""The project's errors and exit statuses: one table, used by the command line, the launch scripts and the docs.

Every error the project raises on purpose derives from `LlmJaxError` and carries the exit status the command
line returns for it; `llm-jax` prints its message as one line (`error: ...`) and no traceback. Anything else
escaping a command is a bug: exit status 1 with the traceback.

This module imports nothing from the project, so every package may import it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_HALTED = 3
EXIT_IO = 74          # sysexits.h EX_IOERR
EXIT_PREEMPTED = 75   # sysexits.h EX_TEMPFAIL: requeue me
EXIT_PEER_LOST = 76   # a process of a multi-process run died; sysexits.h EX_PROTOCOL (a remote peer failed)

# (status, name, meaning, what to do) — docs/reliability.md's table is generated from this.
EXIT_STATUSES = (
    (EXIT_OK, "ok", "the command finished", "—"),
    (EXIT_BUG, "bug", "an unexpected exception (a traceback is printed): a bug in llm_jax or a library; also "
     "`llm-jax compile`'s answer that the step does not fit the chip (one `error:` line, no traceback)",
     "report it with the traceback; for compile, the line names the knobs that would help"),
    (EXIT_USAGE, "usage", "bad input or a refusal: an unknown flag or config key, a value out of range, a path "
     "that does not exist or cannot be accessed (permissions, read-only), a file that cannot be parsed, a work "
     "directory locked by another run or holding an incompatible run; nothing was started or changed",
     "fix what the one-line error names and rerun"),
    (EXIT_HALTED, "halted", "training stopped itself: a non-finite loss or gradient, or too many loss spikes; "
     "the last good state is checkpointed", "lower train.lr (or set train.nonfinite=skip) and rerun to resume"),
    (EXIT_IO, "io", "the storage failed: a disk full, an I/O error, a checkpoint that retries could not read; the "
     "last good checkpoint is intact", "free space or fix the storage, then rerun to resume"),
    (EXIT_PREEMPTED, "preempted", "SIGTERM/SIGINT: the step finished and a checkpoint of it was written",
     "requeue: the same command resumes from that checkpoint"),
    (EXIT_PEER_LOST, "peer lost", "another process of a multi-process run died or stopped answering; work since "
     "the last checkpoint is lost", "requeue: the same command resumes from the last checkpoint"),
    ("128+N", "signal", "killed by signal N before it could react (137 = SIGKILL, e.g. the out-of-memory killer); "
     "reported by launch/local.sh and by the supervising parent of a multi-process run",
     "rerun: the same command resumes from the last checkpoint"),
)


def exit_status_table() -> str:
    """EXIT_STATUSES as the markdown table in docs/reliability.md (a test keeps the two equal)."""
    rows = ["| status | name | meaning | what to do |", "|---|---|---|---|"]
    rows += [f"| {status} | {name} | {meaning} | {todo} |" for status, name, meaning, todo in EXIT_STATUSES]
    return "\n".join(rows)


class LlmJaxError(Exception):
    """Base of the errors the project raises on purpose; `exit_status` is what `llm-jax` returns."""
    exit_status = EXIT_BUG


class UserError(LlmJaxError, ValueError):
    """Bad input or a refusal: one line naming the problem, exit status 2, nothing changed."""
    exit_status = EXIT_USAGE


class HaltedError(LlmJaxError, RuntimeError):
    """Training stopped itself (non-finite loss, loss spikes) with the last good state checkpointed."""
    exit_status = EXIT_HALTED


class StorageError(LlmJaxError, OSError):
    """A file could not be written or read for a reason outside the input's content (space, permissions, I/O)."""
    exit_status = EXIT_IO


class PeerLostError(LlmJaxError, RuntimeError):
    """Another process of a multi-process run died."""
    exit_status = EXIT_PEER_LOST


class Preempted(LlmJaxError):  # noqa: N818 (a normal way for a run to end, not an error)
    """Raised by the training loop after the preemption checkpoint is written."""
    exit_status = EXIT_PREEMPTED

    def __init__(self, step: int | None, signal_name: str):
        done = (f"checkpoint written at step {step}" if step is not None else
                "before the first training step, nothing to checkpoint")
        super().__init__(f"{signal_name} received: {done}; exiting with status {EXIT_PREEMPTED} so the job can be "
                         f"requeued (the same command resumes it)")
        self.step = step


def one_line(e: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, shortened: for summarising a library's exception inside ours."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
