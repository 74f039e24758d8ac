"""A run's work directory: one run at a time (an OS lock), a run id, `--restart`, and what may change on resume.

- **Lock.** `WorkdirLock` holds `fcntl.flock` on `<workdir>/llm_jax.lock` for the life of the run (process 0
  of a multi-process run takes it for all) and removes the file when the run ends. The kernel drops the lock
  when its process dies, so a lock file still naming a holder but not locked is stale: it is taken over with
  a message. A second run refuses.
  Where the file system has no `flock` (some network mounts), the recorded pid and host decide.
- **Run id.** Every run gets one (`20261130-121502-3fa9c1`); it is in the lock file, the first log line and
  every `metrics.jsonl` row, so interleaved or appended histories can be told apart.
- **Restart.** `llm-jax train --restart` moves everything a previous run left (checkpoints, checkpoints_bad,
  metrics, TensorBoard events, config.json, tokenizer) into `previous/<time>/` and starts from step 0:
  nothing is deleted.
- **Resume policy** (`resume_differences`): model keys that define the parameters cannot change on resume;
  the rest can, and changes are reported. See RESUMABLE below.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import time

from llm_jax import config as config_lib
from llm_jax import fileio
from llm_jax.errors import UserError

LOCK_FILE = "llm_jax.lock"
# What `--restart` moves aside (everything a run writes at the top of its work directory).
RUN_FILES = ("checkpoints", "checkpoints_bad", "metrics.jsonl", "tensorboard", "config.json", "tokenizer.model",
             "tokenizer.json", "tokenizer.llm_jax.json", "rollouts")

# model.* keys that change how the model computes but not what its parameters mean: free to change on resume.
COMPUTE_ONLY_MODEL_KEYS = ("dtype", "remat", "scan_unroll", "attention_impl", "attention_block", "dropout",
                           "document_mask", "lora_dropout")
# Keys whose change makes the resumed run read different batches than the interrupted one would have.
DATA_ORDER_KEYS = ("train.seed", "train.batch_size")
RESUMABLE = ("train.* (steps, learning-rate schedule, optimizer hyperparameters, clipping, guards, evaluation, "
             "logging), checkpoint.*, mesh.* (the state is resharded on restore), data.* and name; model.dtype, "
             "model.remat, model.scan_unroll, model.attention_impl, model.attention_block, model.dropout, "
             "model.document_mask, model.lora_dropout")


class WorkdirBusyError(UserError):
    """Another run holds the work directory."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """`with WorkdirLock(workdir, run_id, log): ...` — exclusive use of `workdir` by this process."""

    def __init__(self, workdir: str, run_id: str, log=print):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.run_id, self.log = run_id, log
        self._fd: int | None = None

    def _holder(self) -> dict:
        try:
            with open(self.path) as f:
                text = f.read()
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _describe(holder: dict) -> str:
        return (f"run {holder.get('run_id', '?')}, process {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                f"started {holder.get('started', '?')}")

    def acquire(self) -> None:
        while True:  # until the locked file is the one at self.path (a releasing holder unlinks it)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise fileio.os_error(e, "create the lock file", self.path) from e
            previous = self._holder()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise WorkdirBusyError(f"work directory {os.path.dirname(self.path)} is in use by another run "
                                       f"({self._describe(previous)}); wait for it to finish or stop it, or use "
                                       f"another --workdir") from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    os.close(fd)
                    raise fileio.os_error(e, "lock", self.path) from e
                self._check_recorded_holder(fd, previous)
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._fd = fd
        previous = self._holder()
        if previous.get("pid"):
            self.log(f"taking over the work directory lock of {self._describe(previous)}, which is no longer "
                     f"running")
        record = {"run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)

    def _check_recorded_holder(self, fd: int, previous: dict) -> None:
        """Without flock (some network mounts), a recorded holder that may still run refuses the lock."""
        same_host = previous.get("host") == socket.gethostname()
        if previous.get("pid") and (not same_host or _pid_alive(int(previous["pid"]))):
            os.close(fd)
            raise WorkdirBusyError(f"work directory {os.path.dirname(self.path)} is in use by another run "
                                   f"({self._describe(previous)}; this file system cannot lock, so the recorded "
                                   f"holder decides); use another --workdir or remove {self.path} if it is dead")

    def release(self) -> None:
        """Removes the lock file, then unlocks: a clean end leaves no lock file behind (one left by a killed
        run names its holder, and the next run takes it over)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def prepare(workdir: str) -> None:
    """Creates the work directory and checks that it is writable."""
    fileio.check_writable_dir(workdir)


def archive_previous_run(workdir: str, log=print) -> str | None:
    """`--restart`: moves the previous run's files into `previous/<time>/`; returns that path (None if empty)."""
    present = [name for name in RUN_FILES if os.path.lexists(os.path.join(workdir, name))]
    if not present:
        return None
    dest = os.path.join(workdir, "previous", time.strftime("%Y%m%d-%H%M%S"))
    while os.path.exists(dest):
        dest += "-1"
    os.makedirs(dest)
    for name in present:
        shutil.move(os.path.join(workdir, name), os.path.join(dest, name))
    log(f"--restart: moved the previous run's {', '.join(present)} to {dest}; starting from step 0")
    return dest


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = _plain(value)
    return out


def _plain(value):
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def resume_differences(saved: dict, now: dict) -> tuple[list[str], list[str], list[str]]:
    """(refused, data-order, allowed) changes between the config saved with a checkpoint and this run's, each
    as 'key: saved -> now'. Refused: model.* keys other than COMPUTE_ONLY_MODEL_KEYS."""
    old, new = _flat(saved), _flat(now)
    defaults = _flat(config_lib.default_config().to_dict())
    old = {**{k: v for k, v in defaults.items() if k not in old}, **old}  # keys added since: they had the default
    refused, data_order, allowed = [], [], []
    for key in sorted(set(old) | set(new)):
        if key not in old or key not in new or key == "checkpoint.restore_from":
            continue  # a key retired from the schema since then; restore_from is for new runs
        if old.get(key) == new.get(key):
            continue
        change = f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        section, _, name = key.partition(".")
        if key in DATA_ORDER_KEYS or section == "data":
            data_order.append(change)
        if section == "model" and name not in COMPUTE_ONLY_MODEL_KEYS:
            refused.append(change)
        elif key not in DATA_ORDER_KEYS and section != "data":
            allowed.append(change)
    return refused, data_order, allowed
