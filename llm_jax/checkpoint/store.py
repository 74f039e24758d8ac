"""Checkpoints of a run (orbax-checkpoint): `checkpoints/<step>/{params,train,data,config}` in the work directory.

- Saves are asynchronous: training continues while the previous save is written; a save is waited for only
  when the next one starts, at the end of the run, or on preemption (`checkpoint.async_save=False` waits at
  once).
- A checkpoint is only "latest" once complete: orbax writes it into `<step>.orbax-checkpoint-tmp` and renames
  it when done; old checkpoints are deleted only after a newer one is committed. Just before that rename we
  seal it (`seal.py`: every file's size and CRC-32), so a committed checkpoint is always sealed.
- Restore (`Checkpointer.restore_latest`) walks from the newest checkpoint down:
  1. integrity: a checkpoint whose files fail their seal is *damaged*: moved to `checkpoints_bad/` with a
     warning, and the previous one is tried. Nothing else is ever quarantined.
  2. compatibility: the caller's check of the config saved with it (`check_config`), then the saved arrays'
     paths, shapes and dtypes against what this run needs. A mismatch refuses to resume (`CheckpointError`,
     one line naming the difference); the checkpoint is left where it is.
  3. reading, retried (RESTORE_ATTEMPTS): a checkpoint that still cannot be read is a storage problem
     (`CheckpointReadError`), never a reason to move it or to start from scratch.
  When no intact checkpoint is left and `checkpoints_bad/` holds damaged ones, the run refuses to start from
  step 0 (`--restart` does). On several processes, process 0 verifies and all share its verdict.
- Arrays are restored by path (`'opt_state/1/0/mu/embed/embedding'`), not by container type, so a state tree
  that gained or lost an empty node (an optimizer wrapper without state) still restores, and a real
  difference is reported leaf by leaf. Restoring against `jax.ShapeDtypeStruct`s with shardings reshards onto
  the current mesh.
- Parameters and the rest of the state are separate items, so inference, conversion and fine-tuning restore
  parameters alone.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import time
from typing import Callable

import jax
import orbax.checkpoint as ocp
from etils import epath

from llm_jax import fileio
from llm_jax.errors import StorageError, UserError, one_line
from llm_jax.parallel import distributed
from llm_jax.checkpoint import seal

ITEMS = ("params", "train", "data", "config")
TMP_SUFFIX = ".orbax-checkpoint-tmp"
RESTORE_ATTEMPTS = 3
RETRY_SECONDS = 1.0  # doubled after each failed attempt


class CheckpointError(UserError):
    """No checkpoint can be used as asked: a refusal (incompatible run, nothing intact); nothing was moved."""


class CheckpointWriteError(StorageError):
    """A checkpoint cannot be written (disk full, not writable); the last good one is intact."""


class CheckpointReadError(StorageError):
    """An intact checkpoint cannot be read (storage trouble that retries did not fix); nothing was moved."""


def _uncommitted_dir(directory: str, step: int) -> str:
    """Where orbax is writing `step` before its commit: the temporary directory, or on object stores (which
    orbax writes in place) the final one."""
    tmp = os.path.join(directory, f"{step}{TMP_SUFFIX}")
    return tmp if os.path.isdir(tmp) else os.path.join(directory, str(step))


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, keep: int = 2, keep_every: int = 0, read_only: bool = False,
            on_commit: Callable[[], None] | None = None) -> ocp.CheckpointManager:
    """An orbax manager for `workdir/checkpoints`; saves are asynchronous (wait with `wait_until_finished`) and
    `on_commit` runs in orbax's background thread, on the primary process, just before a save is committed."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, keep_period=keep_every or None, create=not read_only,
        read_only=read_only, enable_async_checkpointing=True, cleanup_tmp_directories=not read_only,
        save_interval_steps=0 if read_only else 1,
        async_options=ocp.AsyncOptions(post_finalization_callback=on_commit) if on_commit else None)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


def _train_item(state) -> dict:
    """Everything of a train state but its parameters (the `train` item), whatever fields the state has."""
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.name != "params"}


def step_path(mngr: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(str(mngr.directory), str(step))


def has_item(mngr: ocp.CheckpointManager, step: int, item: str) -> bool:
    return os.path.isdir(os.path.join(step_path(mngr, step), item))


def _json_item(step_dir: str, item: str) -> dict | None:
    """A JSON item of a checkpoint (`config`, `data`) read straight from its file; None if it has none or it
    cannot be parsed (its integrity is the seal's business)."""
    path = os.path.join(step_dir, item, "metadata")
    if not os.path.isfile(path):
        return None
    try:
        return fileio.read_json(path, f"checkpoint {item}")
    except UserError:
        return None


def saved_config(step_dir: str) -> dict | None:
    """The resolved config saved with a checkpoint (None if it has none or it cannot be parsed)."""
    return _json_item(step_dir, "config")


def newest_saved_config(workdir: str) -> tuple[int, dict | None] | None:
    """(step, saved config) of the newest committed checkpoint, read without orbax (for checks that should
    fail fast, before data preparation); None when there is no checkpoint."""
    directory = checkpoint_dir(workdir)
    steps = sorted((int(n) for n in os.listdir(directory) if n.isdigit()), reverse=True) \
        if os.path.isdir(directory) else []
    return (steps[0], saved_config(os.path.join(directory, str(steps[0])))) if steps else None


# ------------------------------------------------------------------------------------ restoring by path


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path(path) -> str:
    return "/".join(_key_name(k) for k in path)


def _leaves_by_path(tree) -> dict:
    return {_path(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _saved_tree(item_dir: str):
    """The saved item's tree of array metadata (shapes and dtypes), read without loading any array."""
    handler = ocp.PyTreeCheckpointHandler()
    try:
        return handler.metadata(epath.Path(item_dir)).tree
    finally:
        handler.close()


def tree_differences(saved: dict, wanted: dict, limit: int = 3) -> list[str]:
    """How the saved leaves ({path: metadata}) differ from the wanted ones ({path: ShapeDtypeStruct})."""
    out = []
    for path in sorted(set(saved) | set(wanted)):
        if path not in saved:
            out.append(f"{path} is needed but not in the checkpoint")
        elif path not in wanted:
            out.append(f"{path} is in the checkpoint but not in this run's state")
        elif tuple(saved[path].shape) != tuple(wanted[path].shape) or saved[path].dtype != wanted[path].dtype:
            out.append(f"{path} is {saved[path].dtype}{list(saved[path].shape)} there, "
                       f"{wanted[path].dtype}{list(wanted[path].shape)} here")
    return out[:limit] + ([f"and {len(out) - limit} more"] if len(out) > limit else [])


def _target(item_dir: str, abstract_item, optional=None):
    """(restore target shaped like the saved tree, differences). The target mirrors the checkpoint's own
    containers with this run's shardings at each leaf, so orbax never sees a container mismatch. Wanted leaves
    whose path satisfies `optional` may be absent from the checkpoint (they are left out)."""
    saved_tree = _saved_tree(item_dir)
    saved, wanted = _leaves_by_path(saved_tree), _leaves_by_path(abstract_item)
    if optional is not None:
        wanted = {p: v for p, v in wanted.items() if p in saved or not optional(p)}
    differences = tree_differences(saved, wanted)
    if differences:
        return None, differences
    target = jax.tree_util.tree_map_with_path(lambda p, _: wanted[_path(p)], saved_tree)
    return target, []


def _rebuild(restored_item, abstract_item, fill=None):
    """The restored leaves put back into this run's own tree structure; leaves the checkpoint did not have come
    from `fill` (a tree like `abstract_item`)."""
    leaves = _leaves_by_path(restored_item)
    paths, treedef = jax.tree_util.tree_flatten_with_path(abstract_item)
    filler = jax.tree.leaves(fill) if fill is not None else [None] * len(paths)
    return jax.tree_util.tree_unflatten(treedef, [leaves.get(_path(p), f) for (p, _), f in zip(paths, filler)])


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, params_only: bool = False, new_params=None):
    """(params, train fields or None) at `step`, laid out like `abstract_state` (shapes, dtypes, shardings).
    The train fields are None for a parameters-only checkpoint (converted or exported) or with params_only.
    `new_params` = (predicate on parameter paths, tree to take them from): parameters this run adds (adapters, a
    value head) that the checkpoint may lack. Raises CheckpointError when the saved arrays do not match."""
    optional, fill = new_params or (None, None)
    wanted = {"params": abstract_state.params}
    if has_item(mngr, step, "train") and not params_only:
        wanted["train"] = _train_item(abstract_state)
    targets, differences = {}, []
    for name, abstract_item in wanted.items():
        targets[name], found = _target(os.path.join(step_path(mngr, step), name), abstract_item,
                                       optional if name == "params" else None)
        differences += [f"{name}/{d}" for d in found]
    if differences:
        raise CheckpointError(f"checkpoint {step} in {mngr.directory} does not fit this model: "
                              f"{'; '.join(differences)}")
    out = mngr.restore(step, args=ocp.args.Composite(**{k: ocp.args.StandardRestore(v) for k, v in targets.items()}))
    params = _rebuild(out["params"], abstract_state.params, fill)
    return params, (dict(_rebuild(out["train"], wanted["train"])) if "train" in wanted else None)


def _with_retries(fn, what: str, log):
    """fn() retried on exceptions that are not our own verdicts; the last exception propagates."""
    delay = RETRY_SECONDS
    for attempt in range(1, RESTORE_ATTEMPTS + 1):
        try:
            return fn()
        except UserError:
            raise
        except Exception as e:  # tensorstore/orbax/OS errors: maybe transient
            if attempt == RESTORE_ATTEMPTS:
                raise
            log(f"warning: {what} failed ({one_line(e, 200)}); retrying in {delay:.0f}s "
                f"(attempt {attempt + 1} of {RESTORE_ATTEMPTS})")
            time.sleep(delay)
            delay *= 2


# -------------------------------------------------------------------------------------------- the run's


class Checkpointer:
    """Saving policy (every N steps, every T minutes, keep K + every M-th), sealing, and validated restore."""

    def __init__(self, workdir: str, ck_cfg, log=print):
        self.workdir, self.cfg, self.log = workdir, ck_cfg, log
        self.directory = checkpoint_dir(workdir)
        try:
            self.mngr = manager(workdir, ck_cfg.keep, ck_cfg.keep_every, on_commit=self._seal_in_flight)
        except OSError as e:
            raise CheckpointWriteError(f"cannot use checkpoint directory {self.directory}: {e.strerror or e}") from e
        self._in_flight: int | None = None
        self._last_save = time.monotonic()
        self.last_good: int | None = None
        self.quarantined: list[int] = []

    # ------------------------------------------------------------------------------------------ saving

    def steps_due(self, step: int) -> bool:
        return bool(self.cfg.every) and step % self.cfg.every == 0

    def time_due(self) -> bool:
        return bool(self.cfg.every_minutes) and time.monotonic() - self._last_save >= 60 * self.cfg.every_minutes

    def due(self, step: int) -> bool:
        return self.steps_due(step) or self.time_due()

    def _seal_in_flight(self) -> None:
        """orbax's post-finalization callback (background thread, primary process): seal the temporary
        directory before orbax renames it into place. An exception here stops the commit."""
        seal.seal(_uncommitted_dir(self.directory, self._in_flight))

    def save(self, state, data_state: dict, config: dict, wait: bool = False) -> None:
        """Starts saving `state` at its step (after finishing the previous save); `wait` blocks until done."""
        step = int(state.step)
        self.finish()
        if step in self.mngr.all_steps():  # e.g. a halted run saving the step it already has
            return
        items = {"params": ocp.args.StandardSave(state.params), "train": ocp.args.StandardSave(_train_item(state)),
                 "data": ocp.args.JsonSave(data_state), "config": ocp.args.JsonSave(config)}
        self._in_flight = step
        try:
            saved = self.mngr.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as e:  # orbax wraps OSError (ENOSPC, EACCES) in its own errors
            raise self._write_error(step, e) from e
        if not saved:
            raise self._write_error(step, RuntimeError(f"orbax declined to save step {step} "
                                                       f"(existing steps: {self.mngr.all_steps()})"))
        self._last_save = time.monotonic()
        if wait or not self.cfg.async_save:
            self.finish()

    def finish(self) -> None:
        """Waits for the save in flight (committed and sealed when this returns)."""
        if self._in_flight is None:
            return
        step = self._in_flight
        try:
            self.mngr.wait_until_finished()
        except Exception as e:
            raise self._write_error(step, e) from e
        finally:
            self._in_flight = None
        if os.path.isdir(os.path.join(self.directory, str(step))):
            self.last_good = step

    def _write_error(self, step: int, e: Exception) -> CheckpointWriteError:
        self._in_flight = None
        last = f"step {self.last_good}" if self.last_good is not None else "none written by this run"
        return CheckpointWriteError(f"cannot write the checkpoint at step {step} to {self.directory}: "
                                    f"{_root_cause(e)}. The last good checkpoint is {last}; stopping.")

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
            self.log(f"warning: checkpoint {step} is damaged ({reason}); moved to {dest}, trying the previous one")
        distributed.barrier(f"llm_jax:quarantine:{step}")
        self.quarantined.append(step)
        self.mngr.reload()

    def _verify(self, step: int, step_dir: str) -> str | None:
        """Why checkpoint `step` is damaged, or None. Process 0 reads the files (retried: an unreadable file
        may be the storage, not the checkpoint) and every process learns the verdict, so a pod reads the
        checkpoint once to verify it, not once per host."""
        problem, error = None, None
        if distributed.is_primary():
            try:
                problem = _with_retries(lambda: seal.problem(step_dir), f"verifying checkpoint {step}", self.log)
            except OSError as e:
                error = e
        if distributed.any_process(error is not None):
            raise CheckpointReadError(f"cannot read checkpoint {step} in {self.directory} to verify it: "
                                      f"{_root_cause(error) if error else 'see process 0'}. Nothing was moved; "
                                      f"rerun when the storage is readable")
        if distributed.any_process(problem is not None):
            return problem or "its files fail their seal (checked by process 0)"
        return None

    def restore_latest(self, abstract_state, check_config: Callable[[int, dict | None], None] | None = None):
        """(params, train fields or None, step) from the newest intact checkpoint; (None, None, None) if there
        is none. Damaged checkpoints are quarantined on the way down; see the module docstring for the rest."""
        for step in sorted(self.mngr.all_steps(), reverse=True):
            step_dir = os.path.join(self.directory, str(step))
            problem = self._verify(step, step_dir)
            if problem:
                self.quarantine(step, problem)
                continue
            if check_config is not None:
                check_config(step, saved_config(step_dir))
            try:
                params, train = _with_retries(lambda: restore(self.mngr, step, abstract_state),
                                              f"restoring checkpoint {step}", self.log)
            except UserError:
                raise
            except Exception as e:
                why = ("although its files pass their checksums" if seal.is_sealed(step_dir) else
                       "and it has no seal to tell damage from a storage error")
                raise CheckpointReadError(
                    f"cannot read checkpoint {step} in {self.directory}, {why}: {_root_cause(e)}. Nothing was "
                    f"moved; rerun when the storage is readable (or move the checkpoint aside if it is damaged)") from e
            self.last_good = step
            return params, train, step
        bad_dir = os.path.join(os.path.dirname(self.directory), "checkpoints_bad")
        if self.quarantined or (os.path.isdir(bad_dir) and os.listdir(bad_dir)):
            raise CheckpointError(
                f"no intact checkpoint is left in {self.directory} and checkpoints_bad/ holds damaged ones "
                f"({', '.join(sorted(os.listdir(bad_dir)))}); refusing to start again from step 0 — rerun with "
                f"--restart to do that (the old run is moved to previous/)")
        return None, None, None


_OS_REASONS = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EIO))


def _root_cause(e: BaseException) -> str:
    """The innermost exception's one line (orbax wraps OSErrors several times), led by the operating system's
    reason when one appears anywhere in the chain (tensorstore buries 'No space left on device' deep inside)."""
    chain = [e]
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
        chain.append(e)
    text = " ".join(str(x) for x in chain)
    reason = next((r for r in _OS_REASONS if r in text), None)
    return f"{reason} ({one_line(e, 200)})" if reason else one_line(e)


def resolve_restore_from(path: str) -> tuple[str, int | None]:
    """A work directory (its latest checkpoint) or one of its `checkpoints/<step>` directories."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if name.isdigit() and os.path.basename(parent) == "checkpoints":
        return os.path.dirname(parent), int(name)
    return path, None


def _newest_intact(mngr: ocp.CheckpointManager, steps: list[int], what: str, log=None) -> int:
    """The newest of `steps` that passes its seal (read-only: nothing is moved); a damaged newer one is reported
    through `log`. Raises CheckpointError when none is intact."""
    problems = []
    for step in sorted(steps, reverse=True):
        problem = seal.problem(step_path(mngr, step))
        if not problem:
            if problems and log is not None:
                log(f"warning: {what}: skipping damaged checkpoint(s) ({'; '.join(problems)}); using step {step}")
            return step
        problems.append(f"{step}: {problem}")
    raise CheckpointError(f"{what}: no intact checkpoint ({'; '.join(problems) or 'none saved'})")


def restore_other_run(path: str, abstract_state, params_only: bool, new_params=None):
    """(params, train fields or None, step) from another run's checkpoint (checkpoint.restore_from); `new_params`
    as in `restore`."""
    workdir, step = resolve_restore_from(path)
    if not os.path.isdir(checkpoint_dir(workdir)):
        raise CheckpointError(f"checkpoint.restore_from={path!r}: no checkpoints/ directory in {workdir}")
    mngr = manager(workdir, read_only=True)
    try:
        if step is not None and step not in mngr.all_steps():
            raise CheckpointError(f"checkpoint.restore_from={path!r}: there is no checkpoint {step}")
        candidate = _newest_intact(mngr, [step] if step is not None else mngr.all_steps(),
                                   f"checkpoint.restore_from={path!r}")
        try:
            params, train = restore(mngr, candidate, abstract_state, params_only, new_params)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint.restore_from={path!r}: {e}") from e
        return params, train, candidate
    finally:
        mngr.close()


def restore_data_state(mngr: ocp.CheckpointManager, step: int) -> dict | None:
    """The loader position saved at `step` ({"step", "seed", "fingerprint"}), or None if none was saved."""
    return _json_item(step_path(mngr, step), "data")


def save_params(workdir: str, params, step: int = 0) -> None:
    """A parameters-only checkpoint (conversion, export), sealed like any other."""
    directory = checkpoint_dir(workdir)
    mngr = manager(workdir, keep=1, on_commit=lambda: seal.seal(_uncommitted_dir(directory, step)))
    try:
        mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)), force=True)
        mngr.wait_until_finished()
    except Exception as e:
        raise CheckpointWriteError(f"cannot write parameters to {mngr.directory}: {_root_cause(e)}") from e
    finally:
        mngr.close()


def restore_params(workdir: str, abstract_params, step: int | None = None, log=None):
    """(parameters, step) from the latest intact (or the given) checkpoint of `workdir`; skipped damaged
    checkpoints are reported through `log`."""
    mngr = manager(workdir, read_only=True)
    try:
        steps = mngr.all_steps() if step is None else [step]
        if step is not None and step not in mngr.all_steps():
            raise CheckpointError(f"{checkpoint_dir(workdir)} has no checkpoint {step} "
                                  f"(it has {', '.join(map(str, sorted(mngr.all_steps()))) or 'none'})")
        candidate = _newest_intact(mngr, steps, checkpoint_dir(workdir), log)
        target, differences = _target(os.path.join(step_path(mngr, candidate), "params"), abstract_params)
        if differences:
            raise CheckpointError(f"checkpoint {candidate} in {checkpoint_dir(workdir)} does not fit the model of "
                                  f"its config.json: {'; '.join(differences)}")
        out = mngr.restore(candidate, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
        return _rebuild(out["params"], abstract_params), candidate
    finally:
        mngr.close()
