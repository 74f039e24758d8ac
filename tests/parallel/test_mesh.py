import jax
from jax.sharding import PartitionSpec as P

from helpers import small_config
from llm_jax.parallel.mesh import fit_spec, make_mesh


def test_mesh_axes_and_shape():
    mesh = make_mesh(small_config())
    assert mesh.axis_names == ("stage", "data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"stage": 1, "data": jax.device_count(), "fsdp": 1, "tensor": 1}


class FakeMesh:
    shape = {"data": 2, "fsdp": 4, "tensor": 4}


def test_fit_spec_replicates_dimensions_the_mesh_does_not_divide():
    assert fit_spec(P("fsdp", "tensor", None), (64, 1, 8), FakeMesh()) == P("fsdp", None, None)  # 1 KV head
    assert fit_spec(P(("data", "fsdp"), None), (16, 3), FakeMesh()) == P(("data", "fsdp"), None)
    assert fit_spec(P(("data", "fsdp")), (12,), FakeMesh()) == P(None)
