"""Sharding invariance on 8 fake CPU devices: every mesh gives the 1-device losses; FSDP divides memory."""

import json
import os

import numpy as np
import pytest

from helpers import REPO, run_script

SCRIPT = os.path.join(REPO, "tests", "parallel", "sharded_run.py")
MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 2, 4)]


def run_meshes(meshes, devices):
    flags = f"--xla_force_host_platform_device_count={devices}"
    args = " ".join(",".join(map(str, m)) for m in meshes)
    code = f"import sys, runpy; sys.argv = ['x'] + {args.split()!r}; runpy.run_path({SCRIPT!r}, run_name='__main__')"
    proc = run_script(code, env={"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    reference = run_meshes([(1, 1, 1)], devices=1)[0]
    sharded = run_meshes(MESHES, devices=8)
    return reference, {tuple(r["mesh"]): r for r in sharded}


@pytest.mark.parametrize("mesh", MESHES)
def test_losses_match_one_device_within_1e_5(results, mesh):
    reference, sharded = results
    assert len(reference["losses"]) == 10 and np.isfinite(reference["losses"]).all()
    assert reference["losses"][-1] < reference["losses"][0] - 1.0  # the model learns: losses really move
    np.testing.assert_allclose(sharded[mesh]["losses"], reference["losses"], atol=1e-5, rtol=0)


def test_fsdp_divides_parameter_and_optimizer_memory_by_8(results):
    _, sharded = results
    memory = sharded[(1, 8, 1)]["memory"]
    per_device_state = memory["argument_bytes"] - memory["batch_bytes"]
    assert per_device_state <= memory["total_state_bytes"] / 8 * 1.05, memory
    replicated = sharded[(8, 1, 1)]["memory"]  # pure data parallelism keeps a full copy per device
    assert replicated["argument_bytes"] - replicated["batch_bytes"] >= 0.95 * replicated["total_state_bytes"]
