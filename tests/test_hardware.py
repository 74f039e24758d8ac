import pytest

from llm_jax.hardware import measure_matmul_flops, peak_flops, table_peak


@pytest.mark.parametrize("kind, peak", [
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5p", 459e12), ("TPU v6 lite", 918e12),
    ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
])
def test_peak_table(kind, peak):
    assert table_peak(kind) == peak


def test_unknown_kinds_and_cpu_ceiling():
    assert table_peak("cpu") is None
    assert measure_matmul_flops(256, repeats=2) > 1e8
    total, how = peak_flops()
    assert total > 1e8 and "measured" in how
