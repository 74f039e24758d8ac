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


# ------------------------------------------------------------------------------- damaged files, atomic writes

import errno  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402

import pytest  # noqa: E402

from llm_jax.errors import StorageError, UserError  # noqa: E402
from llm_jax.interop import safetensors_io  # noqa: E402
from llm_jax.interop.safetensors_io import SafetensorsError  # noqa: E402


def _raw_file(path, header: dict, data: bytes = b"") -> str:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return str(path)


def _good_bytes(tmp_path) -> bytes:
    write_file(str(tmp_path / "good.safetensors"), {"w": np.arange(12, dtype=np.float32).reshape(3, 4)})
    return (tmp_path / "good.safetensors").read_bytes()


@pytest.mark.parametrize("cut, problem", [
    (0, "too short for a header"), (5, "too short for a header"), (20, "header claims"), (-8, "truncated?"),
])
def test_a_truncated_file_is_one_error_naming_it(tmp_path, cut, problem):
    path = tmp_path / "cut.safetensors"
    good = _good_bytes(tmp_path)
    path.write_bytes(good[:cut])
    with pytest.raises(SafetensorsError, match=problem) as e:
        read_file(str(path))
    assert str(path) in str(e.value)


@pytest.mark.parametrize("content, problem", [
    (b"this is not a safetensors file at all, just some text\n", "header claims"),  # the length is 8 ASCII bytes
    (struct.pack("<Q", 6) + b"\xff\xfegarb", "corrupt header"),
    (struct.pack("<Q", 5) + b"[1,2]", "not an object"),
])
def test_a_garbage_header_is_one_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(SafetensorsError, match=problem) as e:
        read_file(str(path))
    assert str(path) in str(e.value)


@pytest.mark.parametrize("entry, problem", [
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}, r"declares bytes 0..64 .* holds only 16"),
    ({"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}, "spans 16 bytes but shape"),
    ({"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}, "unsupported dtype 'C64'"),
    ({"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}, "invalid shape"),
    ({"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}, "invalid data_offsets"),
    ({"dtype": "F32", "shape": [4]}, "malformed header entry"),
])
def test_header_entries_are_checked_against_the_file(tmp_path, entry, problem):
    path = _raw_file(tmp_path / "bad.safetensors", {"w": entry}, bytes(16))
    with pytest.raises(SafetensorsError, match=problem) as e:
        read_file(path)
    assert path in str(e.value) and "'w'" in str(e.value)


def test_a_directory_named_like_a_file_and_duplicate_shards_are_clear_errors(tmp_path):
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(UserError, match="cannot read safetensors file .*dir.safetensors: Is a directory"):
        read_dir(str(tmp_path))
    os.rmdir(tmp_path / "dir.safetensors")
    write_file(str(tmp_path / "a.safetensors"), {"x": np.zeros(2, np.float32)})
    write_file(str(tmp_path / "b.safetensors"), {"x": np.ones(2, np.float32)})
    with pytest.raises(SafetensorsError, match="'x' is in both .*a.safetensors and .*b.safetensors"):
        read_dir(str(tmp_path))


class _DiskFullAfter:
    """A file object whose second write fails as a full disk would (the first lands)."""

    def __init__(self, f):
        self.f, self.writes = f, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_write_that_fails_midway_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "model.safetensors")
    write_file(path, {"w": np.ones((4, 4), np.float32)})
    before = open(path, "rb").read()
    monkeypatch.setattr(safetensors_io, "open", lambda p, mode="r": _DiskFullAfter(open(p, mode)), raising=False)
    with pytest.raises(StorageError, match=f"cannot write {path}: No space left on device"):
        write_file(path, {"w": np.zeros((64, 64), np.float32)})
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]
    np.testing.assert_array_equal(read_file(path)["w"], np.ones((4, 4), np.float32))
