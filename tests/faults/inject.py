"""`python tests/faults/inject.py ARGS`: runs `llm-jax ARGS` with faults injected from the LLM_JAX_FAULTS
environment variable (a JSON object). The product has no test hooks; this wrapper patches it from outside.

- "nan_step": N      the training step poisons its loss and gradients at (1-based) step N
- "restore_errors": K  the first K checkpoint reads raise EIO, as a flaky file system would (-1: every read)
"""

import errno
import json
import os
import sys

faults = json.loads(os.environ.get("LLM_JAX_FAULTS", "{}"))

if "nan_step" in faults:
    import jax
    import jax.numpy as jnp

    from llm_jax.train import step

    _gradients = step._gradients

    def poisoned_gradients(model, objective, state, *args, **kwargs):
        grads, loss, aux = _gradients(model, objective, state, *args, **kwargs)
        bad = state.step + 1 == faults["nan_step"]
        return jax.tree.map(lambda g: jnp.where(bad, jnp.nan, g), grads), jnp.where(bad, jnp.nan, loss), aux

    step._gradients = poisoned_gradients  # looked up when the step is traced

if "restore_errors" in faults:
    from llm_jax.checkpoint import store

    _restore, _left = store.restore, [faults["restore_errors"]]

    def flaky_restore(*args, **kwargs):
        if _left[0] != 0:
            _left[0] -= 1
            raise OSError(errno.EIO, "Input/output error (injected)")
        return _restore(*args, **kwargs)

    store.restore = flaky_restore  # looked up by Checkpointer.restore_latest

from llm_jax.cli import main  # noqa: E402 (after the patches)

sys.exit(main(sys.argv[1:]))
