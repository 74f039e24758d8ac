import jax
from jax.sharding import PartitionSpec as P

from helpers import small_config
from llm_jax.parallel.mesh import fit_spec, make_mesh


def test_mesh_axes_and_shape():
    mesh = make_mesh(small_config())
    assert mesh.axis_names == ("stage", "data", "fsdp", "expert", "context", "tensor")
    assert dict(mesh.shape) == {"stage": 1, "data": jax.device_count(), "fsdp": 1, "expert": 1, "context": 1,
                               "tensor": 1}


class FakeMesh:
    shape = {"data": 2, "fsdp": 4, "tensor": 4}


def test_fit_spec_replicates_dimensions_the_mesh_does_not_divide():
    assert fit_spec(P("fsdp", "tensor", None), (64, 1, 8), FakeMesh()) == P("fsdp", None, None)  # 1 KV head
    assert fit_spec(P(("data", "fsdp"), None), (16, 3), FakeMesh()) == P(("data", "fsdp"), None)
    assert fit_spec(P(("data", "fsdp")), (12,), FakeMesh()) == P(None)


def test_multi_slice_mesh_keeps_within_slice_axes_inside_a_slice():
    import numpy as np
    from llm_jax.parallel.mesh import slices_of
    devices = list(range(8))  # stand-ins: grouped in order when devices carry no slice or process index
    assert slices_of(devices, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]

    class Dev:
        def __init__(self, i, s):
            self.id, self.slice_index = i, s
    devs = [Dev(i, i % 2) for i in range(8)]
    assert [[d.id for d in s] for s in slices_of(devs, 2)] == [[0, 2, 4, 6], [1, 3, 5, 7]]


def test_dcn_data_doubles_the_data_axis_across_slices():
    import subprocess
    import sys
    from helpers import REPO
    code = ("import jax; from helpers import small_config; from llm_jax.parallel.mesh import make_mesh\n"
            "cfg = small_config(); cfg.mesh.update(data=1, fsdp=2, tensor=2, dcn_data=2)\n"
            "m = make_mesh(cfg); print(dict(m.shape)); print([[d.id for d in row.flatten()] for row in m.devices[0]])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO + "/tests", capture_output=True, text=True,
                          env={**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
                               "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr[-2000:]
    shape, rows = proc.stdout.strip().splitlines()
    assert shape == "{'stage': 1, 'data': 2, 'fsdp': 2, 'expert': 1, 'context': 1, 'tensor': 2}"
    data_rows = eval(rows)  # devices of data index 0 and 1: each a whole slice
    assert sorted(data_rows[0]) == [0, 1, 2, 3] and sorted(data_rows[1]) == [4, 5, 6, 7]
