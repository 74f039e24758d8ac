"""`llm-jax bench checkpoint`: how long an asynchronous save blocks training, against the full save time,
how long the checksums of the seal take (written in the background before the commit, verified before every
restore), and how long restoring takes — onto the same mesh and onto other mesh shapes (resharding on restore).

On CPU the command runs on `--devices` fake devices (default 8) so that the state is sharded (FSDP) and a
restore can change the mesh shape. Everything is measured in one process, one after the other.
"""

from __future__ import annotations

import os
import tempfile
import time

import jax

from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.checkpoint import seal
from llm_jax.models.accounting import param_count
from llm_jax.parallel.mesh import make_mesh
from llm_jax.train.state import state_bytes
from llm_jax.train.trainable import build_trainable


def _mesh_cfg(cfg, shape):
    other = cfg.copy_and_resolve_references()
    other.mesh.data, other.mesh.fsdp, other.mesh.tensor = shape
    config_lib.validate(other, jax.device_count())
    return other


def _timed_restore(workdir, cfg, shape, step):
    abstract = build_trainable(_mesh_cfg(cfg, shape)).abstract
    mngr = checkpoint.manager(workdir, read_only=True)
    start = time.perf_counter()
    params, train = checkpoint.restore(mngr, step, abstract)
    jax.block_until_ready((params, train))
    seconds = time.perf_counter() - start
    mngr.close()
    return seconds


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_checkpoint(cfg, save_mesh=(1, -1, 1), restore_meshes=((2, -1, 1), (1, -1, 2)), repeats: int = 2,
                     log=print) -> dict:
    n = jax.device_count()
    cfg = _mesh_cfg(cfg, save_mesh)
    trainable = build_trainable(cfg)
    mesh = trainable.mesh
    state = trainable.init_state(seed=0)
    jax.block_until_ready(state)
    size = state_bytes(state)
    log(f"bench checkpoint: {param_count(cfg.model):,} parameters, {size / 2**30:.2f} GiB of state "
        f"(parameters + Adam moments) on mesh {dict(mesh.shape)} of {n} devices")
    result = {"params": param_count(cfg.model), "state_bytes": size, "devices": n, "save_mesh": dict(mesh.shape)}
    with tempfile.TemporaryDirectory(dir=os.environ.get("LLM_JAX_BENCH_DIR")) as tmp:
        blocked, full, sync = [], [], []
        for r in range(repeats):
            ck = cfg.checkpoint.copy_and_resolve_references()
            ck.async_save, ck.keep = True, 100
            saver = checkpoint.Checkpointer(os.path.join(tmp, "async"), ck, log=lambda _: None)
            start = time.perf_counter()
            saver.save(state.replace(step=state.step * 0 + r + 1), {"step": r + 1}, cfg.to_dict())
            blocked.append(time.perf_counter() - start)  # what the training loop waits for
            saver.finish()
            full.append(time.perf_counter() - start)
            saver.close()
            ck.async_save = False
            syncer = checkpoint.Checkpointer(os.path.join(tmp, "sync"), ck, log=lambda _: None)
            start = time.perf_counter()
            syncer.save(state.replace(step=state.step * 0 + r + 1), {"step": r + 1}, cfg.to_dict(), wait=True)
            sync.append(time.perf_counter() - start)
            syncer.close()
        result.update(async_blocking_seconds=min(blocked), async_total_seconds=min(full),
                      sync_save_seconds=min(sync))
        result["blocking_fraction"] = result["async_blocking_seconds"] / result["async_total_seconds"]
        log(f"bench checkpoint: async save blocks {result['async_blocking_seconds']:.3f}s of "
            f"{result['async_total_seconds']:.3f}s ({100 * result['blocking_fraction']:.1f}%, target < 10%); "
            f"synchronous save {result['sync_save_seconds']:.3f}s")
        workdir = os.path.join(tmp, "async")
        step_dir = os.path.join(checkpoint.checkpoint_dir(workdir), str(repeats))
        result["checkpoint_disk_bytes"] = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(step_dir)
                                              for f in fs)
        result["seal_seconds"] = min(_timed(lambda: seal.seal(step_dir)) for _ in range(repeats))
        result["verify_seconds"] = min(_timed(lambda: seal.problem(step_dir)) for _ in range(repeats))
        log(f"bench checkpoint: checksums of the checkpoint ({result['checkpoint_disk_bytes'] / 2**30:.2f} GiB on "
            f"disk): sealing "
            f"{result['seal_seconds']:.3f}s (in the background save), verifying {result['verify_seconds']:.3f}s "
            f"(before a restore)")
        result["restore_seconds"] = min(_timed_restore(workdir, cfg, save_mesh, repeats) for _ in range(repeats))
        log(f"bench checkpoint: restore onto the same mesh {result['restore_seconds']:.3f}s")
        result["restore_other_mesh"] = {}
        for shape in restore_meshes:
            seconds = min(_timed_restore(workdir, cfg, shape, repeats) for _ in range(repeats))
            other = make_mesh(_mesh_cfg(cfg, shape))
            result["restore_other_mesh"][str(tuple(other.shape.values()))] = seconds
            log(f"bench checkpoint: restore onto mesh {dict(other.shape)} {seconds:.3f}s")
    return result
