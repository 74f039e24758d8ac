"""Multi-process runs: `jax.distributed` initialisation from the environment, and agreeing on decisions.

Where the process layout comes from, in order:
- explicit: LLM_JAX_COORDINATOR=host:port, LLM_JAX_NUM_PROCESSES=N, LLM_JAX_PROCESS_ID=i (launch/local.sh,
  GKE manifests);
- SLURM (SLURM_JOB_ID with SLURM_NTASKS > 1), Cloud TPU VMs with several workers (TPU_WORKER_HOSTNAMES), or
  multi-slice (MEGASCALE_COORDINATOR_ADDRESS): JAX's own cluster detection reads them;
- otherwise a single process, and nothing is initialised.
LLM_JAX_LOCAL_DEVICES=K gives each process K CPU devices (gloo collectives), for tests on one machine.
LLM_JAX_INIT_TIMEOUT (default 300 s) bounds the wait for all processes to join; LLM_JAX_HEARTBEAT_TIMEOUT
(default 30 s) bounds how long a dead process goes unnoticed.
"""

from __future__ import annotations

import os

import numpy as np


def detect(env=None) -> dict | None:
    """Keyword arguments for jax.distributed.initialize, {} to let JAX detect the cluster, or None."""
    env = os.environ if env is None else env
    if env.get("LLM_JAX_COORDINATOR"):
        return {"coordinator_address": env["LLM_JAX_COORDINATOR"],
                "num_processes": int(env.get("LLM_JAX_NUM_PROCESSES", "1")),
                "process_id": int(env.get("LLM_JAX_PROCESS_ID", "0"))}
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
        return {}
    if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
        return {}
    if env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return {}
    return None


def initialize(log=print) -> None:
    """Joins the multi-process run the environment describes (no-op for a single process)."""
    spec = detect()
    if spec is None:
        return
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only used by CPU devices
    if os.environ.get("LLM_JAX_LOCAL_DEVICES"):
        jax.config.update("jax_num_cpu_devices", int(os.environ["LLM_JAX_LOCAL_DEVICES"]))
    jax.distributed.initialize(**spec, initialization_timeout=int(os.environ.get("LLM_JAX_INIT_TIMEOUT", "300")),
                               heartbeat_timeout_seconds=int(os.environ.get("LLM_JAX_HEARTBEAT_TIMEOUT", "30")))
    log(f"distributed: process {jax.process_index()} of {jax.process_count()}, {jax.local_device_count()} local "
        f"of {jax.device_count()} devices")


def is_primary() -> bool:
    import jax
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """True if `flag` is true on any process (every process must call this at the same point)."""
    import jax
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]), tiled=True)))


def barrier(name: str) -> None:
    import jax
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
