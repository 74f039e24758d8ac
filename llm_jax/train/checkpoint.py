"""Orbax checkpoints of a run: `checkpoints/<step>/{params,train}` under the work directory.

Parameters and the rest of the training state are separate items, so inference, evaluation and
conversion restore parameters alone, and a converted checkpoint (parameters only) can seed fine-tuning.
Restoring against a tree of `jax.ShapeDtypeStruct`s with shardings reshards onto the current mesh.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def manager(workdir: str, keep: int = 2, async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=("params", "train", "data"))


def save(mngr: ocp.CheckpointManager, state, data_state: dict | None = None, force: bool = True) -> None:
    """Saves parameters, the optimizer/step/loss-scale state of `state` (a TrainState), and the data loader's
    position (`data_state`: step, seed, data fingerprint) at the state's step."""
    rest = {"step": state.step, "opt_state": state.opt_state, "loss_scale": state.loss_scale,
            "good_steps": state.good_steps}
    items = {"params": ocp.args.StandardSave(state.params), "train": ocp.args.StandardSave(rest)}
    if data_state is not None:
        items["data"] = ocp.args.JsonSave(data_state)
    mngr.save(int(state.step), args=ocp.args.Composite(**items), force=force)


def save_params(workdir: str, params, step: int = 0) -> None:
    mngr = manager(workdir, async_save=False)
    mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)), force=True)
    mngr.wait_until_finished()
    mngr.close()


def has_train_state(mngr: ocp.CheckpointManager, step: int) -> bool:
    return os.path.isdir(os.path.join(mngr.directory, str(step), "train"))


def restore_data_state(mngr: ocp.CheckpointManager, step: int) -> dict | None:
    """The loader position saved at `step` ({"step", "seed", "fingerprint"}), or None if none was saved."""
    if not os.path.isdir(os.path.join(mngr.directory, str(step), "data")):
        return None
    return dict(mngr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"])


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
    """The full TrainState at `step`, laid out like `abstract_state` (shapes, dtypes and shardings)."""
    rest = {"step": abstract_state.step, "opt_state": abstract_state.opt_state,
            "loss_scale": abstract_state.loss_scale, "good_steps": abstract_state.good_steps}
    out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_state.params),
                                                     train=ocp.args.StandardRestore(rest)))
    return abstract_state.replace(params=out["params"], **out["train"])


def restore_params(workdir: str, abstract_params, step: int | None = None):
    """(parameters, step) from the latest (or given) checkpoint of `workdir`."""
    mngr = manager(workdir, read_only=True)
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(workdir)}")
    params = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params)))["params"]
    mngr.close()
    return params, step
