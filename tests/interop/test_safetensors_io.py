import ml_dtypes
import numpy as np

from llm_jax.interop.safetensors_io import read_dir, read_file, write_file


def test_round_trip_including_bfloat16(tmp_path):
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones((4,), ml_dtypes.bfloat16) * 1.5,
               "c": np.array([1, -2], np.int64)}
    write_file(str(tmp_path / "m.safetensors"), tensors)
    back = read_file(str(tmp_path / "m.safetensors"))
    assert set(back) == set(tensors)
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype
        np.testing.assert_array_equal(back[k], tensors[k])


def test_sharded_files_are_merged_and_readable_by_the_reference_library(tmp_path):
    write_file(str(tmp_path / "model-1.safetensors"), {"x": np.zeros((2,), np.float32)})
    write_file(str(tmp_path / "model-2.safetensors"), {"y": np.ones((3,), np.float16)})
    assert sorted(read_dir(str(tmp_path))) == ["x", "y"]
    from safetensors.numpy import load_file
    np.testing.assert_array_equal(load_file(str(tmp_path / "model-2.safetensors"))["y"], np.ones(3, np.float16))
