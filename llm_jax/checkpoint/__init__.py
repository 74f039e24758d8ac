"""Checkpoint I/O, usable without the training loop: orbax checkpoints of a work directory with sealed
integrity (`seal.py`), validated restore by path, parameters-only saves. Training, inference, export and
conversion all read and write checkpoints through this package (see `store.py`).
"""

from llm_jax.checkpoint import seal
from llm_jax.checkpoint.store import (CheckpointError, Checkpointer, CheckpointReadError, CheckpointWriteError,
                                      checkpoint_dir, manager, newest_saved_config, resolve_restore_from, restore,
                                      restore_data_state, restore_other_run, restore_params, save_params,
                                      saved_config, tree_differences)

__all__ = ["CheckpointError", "CheckpointReadError", "CheckpointWriteError", "Checkpointer", "checkpoint_dir",
           "manager", "newest_saved_config", "resolve_restore_from", "restore", "restore_data_state",
           "restore_other_run", "restore_params", "save_params", "saved_config", "seal", "tree_differences"]
