"""Checkpoints of a run (orbax-checkpoint): `checkpoints/<step>/{params,train,data,config}` in the work directory.

- Saves are asynchronous: training continues while the previous save is written; a save is waited for
  (and sealed) only when the next one starts, at the end of the run, or on preemption.
- A checkpoint is only "latest" once complete: orbax writes each one into a temporary directory and renames
  it when done, and old checkpoints are deleted only after a newer one is committed. After the commit we
  add `llm_jax_seal.json` (every file and its size), so a truncated or deleted file is detected at restore;
  a checkpoint that fails the check, or fails to restore, is moved to `checkpoints_bad/` with a warning and
  the previous one is used. A run never starts from scratch while a restorable checkpoint exists.
- Parameters and the rest of the state are separate items, so inference, conversion and fine-tuning restore
  parameters alone. Restoring against `jax.ShapeDtypeStruct`s with shardings reshards onto the current mesh.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import orbax.checkpoint as ocp

from llm_jax.parallel import distributed

SEAL = "llm_jax_seal.json"
TRAIN_FIELDS = ("step", "opt_state", "loss_scale", "good_steps", "loss_ema", "spikes", "skipped", "halted")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written (disk full, not writable) or no checkpoint can be restored."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, keep: int = 2, keep_every: int = 0, async_save: bool = True,
            read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, keep_period=keep_every or None, create=not read_only,
        read_only=read_only, enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only,
        save_interval_steps=0 if read_only else 1)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_names=("params", "train", "data", "config"))


def _train_item(state) -> dict:
    return {name: getattr(state, name) for name in TRAIN_FIELDS}


def seal(step_dir: str) -> None:
    """Records every file of a committed checkpoint with its size."""
    files = {}
    for root, _, names in os.walk(step_dir):
        for name in names:
            if name != SEAL:
                path = os.path.join(root, name)
                files[os.path.relpath(path, step_dir)] = os.path.getsize(path)
    tmp = os.path.join(step_dir, SEAL + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"files": files}, f)
    os.replace(tmp, os.path.join(step_dir, SEAL))


def seal_problem(step_dir: str) -> str | None:
    """Why a sealed checkpoint is damaged (a missing or resized file), or None if it is intact or unsealed."""
    path = os.path.join(step_dir, SEAL)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        files = json.load(f)["files"]
    for rel, size in sorted(files.items()):
        full = os.path.join(step_dir, rel)
        if not os.path.isfile(full):
            return f"{rel} is missing"
        if os.path.getsize(full) != size:
            return f"{rel} has {os.path.getsize(full)} bytes, {size} when written"
    return None


class Checkpointer:
    """Saving policy (every N steps, every T minutes, keep K + every M-th), sealing, and validated restore."""

    def __init__(self, workdir: str, ck_cfg, log=print):
        self.workdir, self.cfg, self.log = workdir, ck_cfg, log
        self.directory = checkpoint_dir(workdir)
        try:
            self.mngr = manager(workdir, ck_cfg.keep, ck_cfg.keep_every, ck_cfg.async_save)
        except OSError as e:
            raise CheckpointError(f"cannot use checkpoint directory {self.directory}: {e.strerror or e}") from e
        self._unsealed: list[int] = []
        self._last_save = time.monotonic()
        self.last_good: int | None = None

    # ------------------------------------------------------------------------------------------ saving

    def steps_due(self, step: int) -> bool:
        return bool(self.cfg.every) and step % self.cfg.every == 0

    def time_due(self) -> bool:
        return bool(self.cfg.every_minutes) and time.monotonic() - self._last_save >= 60 * self.cfg.every_minutes

    def due(self, step: int) -> bool:
        return self.steps_due(step) or self.time_due()

    def save(self, state, data_state: dict, config: dict, wait: bool = False) -> None:
        """Starts saving `state` at its step (after finishing the previous save); `wait` blocks until done."""
        step = int(state.step)
        self.finish()
        if step in self.mngr.all_steps():  # e.g. a halted run saving the step it already has
            return
        items = {"params": ocp.args.StandardSave(state.params), "train": ocp.args.StandardSave(_train_item(state)),
                 "data": ocp.args.JsonSave(data_state), "config": ocp.args.JsonSave(config)}
        try:
            saved = self.mngr.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as e:  # orbax wraps OSError (ENOSPC, EACCES) in its own errors
            raise self._write_error(step, e) from e
        if not saved:
            raise self._write_error(step, RuntimeError(f"orbax declined to save step {step} "
                                                       f"(existing steps: {self.mngr.all_steps()})"))
        self._unsealed.append(step)
        self._last_save = time.monotonic()
        if wait:
            self.finish()

    def finish(self) -> None:
        """Waits for the save in flight and seals every committed checkpoint."""
        try:
            self.mngr.wait_until_finished()
        except Exception as e:
            raise self._write_error(self._unsealed[-1] if self._unsealed else -1, e) from e
        for step in self._unsealed:
            step_dir = os.path.join(self.directory, str(step))
            if os.path.isdir(step_dir):
                if distributed.is_primary():
                    seal(step_dir)
                self.last_good = step
        self._unsealed = []

    def _write_error(self, step: int, e: Exception) -> CheckpointError:
        last = f"step {self.last_good}" if self.last_good is not None else "none written by this run"
        return CheckpointError(f"cannot write the checkpoint at step {step} to {self.directory}: "
                               f"{type(e).__name__}: {e}. The last good checkpoint is {last}; stopping.")

    def close(self) -> None:
        try:
            self.finish()
        finally:
            self.mngr.close()

    # ----------------------------------------------------------------------------------------- restoring

    def quarantine(self, step: int, reason: str) -> None:
        """Moves a damaged checkpoint aside (the primary process does; every process reaches the same verdict
        from the same files) so that it is never picked again and its step can be saved anew."""
        if distributed.is_primary():
            bad_dir = os.path.join(os.path.dirname(self.directory), "checkpoints_bad")
            os.makedirs(bad_dir, exist_ok=True)
            dest = os.path.join(bad_dir, f"{step}-{int(time.time())}")
            shutil.move(os.path.join(self.directory, str(step)), dest)
            self.log(f"warning: checkpoint {step} is unusable ({reason}); moved to {dest}, trying the previous one")
        distributed.barrier(f"llm_jax:quarantine:{step}")
        self.mngr.reload()

    def restore_latest(self, abstract_state):
        """(params, train fields or None, step) from the newest restorable checkpoint; (None, None, None) if
        there is none. Damaged checkpoints are quarantined on the way down."""
        for step in sorted(self.mngr.all_steps(), reverse=True):
            problem = seal_problem(os.path.join(self.directory, str(step)))
            if problem:
                self.quarantine(step, problem)
                continue
            try:
                params, train = restore(self.mngr, step, abstract_state)
            except Exception as e:  # tensorstore/orbax raise many types for unreadable data
                self.quarantine(step, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
                continue
            self.last_good = step
            return params, train, step
        return None, None, None


def has_item(mngr: ocp.CheckpointManager, step: int, item: str) -> bool:
    return os.path.isdir(os.path.join(mngr.directory, str(step), item))


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, params_only: bool = False):
    """(params, train fields or None) at `step`, laid out like `abstract_state` (shapes, dtypes, shardings).
    The train fields are None for a parameters-only checkpoint (converted or exported) or with params_only."""
    items = {"params": ocp.args.StandardRestore(abstract_state.params)}
    full = has_item(mngr, step, "train") and not params_only
    if full:
        items["train"] = ocp.args.StandardRestore(_train_item(abstract_state))
    out = mngr.restore(step, args=ocp.args.Composite(**items))
    return out["params"], (dict(out["train"]) if full else None)


def resolve_restore_from(path: str) -> tuple[str, int | None]:
    """A work directory (its latest checkpoint) or one of its `checkpoints/<step>` directories."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if name.isdigit() and os.path.basename(parent) == "checkpoints":
        return os.path.dirname(parent), int(name)
    return path, None


def restore_other_run(path: str, abstract_state, params_only: bool):
    """(params, train fields or None, step) from another run's checkpoint (checkpoint.restore_from)."""
    workdir, step = resolve_restore_from(path)
    if not os.path.isdir(checkpoint_dir(workdir)):
        raise CheckpointError(f"checkpoint.restore_from={path!r}: no checkpoints/ directory in {workdir}")
    mngr = manager(workdir, read_only=True)
    try:
        steps = [step] if step is not None else sorted(mngr.all_steps(), reverse=True)
        for candidate in steps:
            if candidate not in mngr.all_steps():
                raise CheckpointError(f"checkpoint.restore_from={path!r}: there is no checkpoint {candidate}")
            if seal_problem(os.path.join(mngr.directory, str(candidate))) is None:
                params, train = restore(mngr, candidate, abstract_state, params_only)
                return params, train, candidate
        raise CheckpointError(f"checkpoint.restore_from={path!r}: no intact checkpoint")
    finally:
        mngr.close()


def restore_data_state(mngr: ocp.CheckpointManager, step: int) -> dict | None:
    """The loader position saved at `step` ({"step", "seed", "fingerprint"}), or None if none was saved."""
    if not has_item(mngr, step, "data"):
        return None
    return dict(mngr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"])


def save_params(workdir: str, params, step: int = 0) -> None:
    """A parameters-only checkpoint (conversion, export)."""
    mngr = manager(workdir, async_save=False)
    mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)), force=True)
    mngr.wait_until_finished()
    seal(os.path.join(mngr.directory, str(step)))
    mngr.close()


def restore_params(workdir: str, abstract_params, step: int | None = None):
    """(parameters, step) from the latest (or given) checkpoint of `workdir`."""
    mngr = manager(workdir, read_only=True)
    steps = sorted(mngr.all_steps(), reverse=True) if step is None else [step]
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(workdir)}")
    problems = []
    for candidate in steps:
        problem = seal_problem(os.path.join(mngr.directory, str(candidate)))
        if problem:
            problems.append(f"{candidate}: {problem}")
            continue
        params = mngr.restore(candidate, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params)))
        mngr.close()
        return params["params"], candidate
    mngr.close()
    raise FileNotFoundError(f"no intact checkpoint in {checkpoint_dir(workdir)} ({'; '.join(problems)})")
