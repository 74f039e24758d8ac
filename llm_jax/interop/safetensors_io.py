"""Reads and writes the safetensors format with numpy alone (bfloat16 through ml_dtypes, no torch).

The format: an 8-byte little-endian header length, a JSON header mapping each name to its dtype, shape and
byte range, then the raw little-endian bytes. Reading checks every declaration against the file, so a truncated
or foreign file is one `SafetensorsError` naming the file and the problem; writing is atomic.
"""

from __future__ import annotations

import glob
import json
import math
import os
import struct

import ml_dtypes
import numpy as np

from llm_jax.fileio import FileFormatError, atomic_path, os_error

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsError(FileFormatError):
    """A safetensors file that cannot be read: the message names the file and what is wrong."""


def _entry(path: str, name: str, info, data_len: int) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, start) of one header entry, checked against the data that follows the header."""
    where = f"safetensors file {path}: tensor {name!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise SafetensorsError(f"{where} has a malformed header entry (needs dtype, shape, data_offsets): "
                               f"{str(info)[:100]}")
    if info["dtype"] not in _DTYPES:
        raise SafetensorsError(f"{where} has unsupported dtype {info['dtype']!r} "
                               f"(supported: {', '.join(_DTYPES)})")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise SafetensorsError(f"{where} has an invalid shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise SafetensorsError(f"{where} has invalid data_offsets {offsets!r}")
    start, end = offsets
    if end > data_len:
        raise SafetensorsError(f"{where} declares bytes {start:,}..{end:,} of tensor data but the file holds only "
                               f"{data_len:,} (truncated?)")
    dtype = np.dtype(_DTYPES[info["dtype"]])
    need = math.prod(shape) * dtype.itemsize
    if end - start != need:
        raise SafetensorsError(f"{where} spans {end - start:,} bytes but shape {shape} of {info['dtype']} needs "
                               f"{need:,}")
    return dtype, tuple(shape), start


def read_file(path: str) -> dict[str, np.ndarray]:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise SafetensorsError(f"safetensors file {path} is {size} bytes long, too short for a header "
                                       f"(empty or truncated)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > size - 8:
                raise SafetensorsError(f"safetensors file {path} is truncated or not a safetensors file: its "
                                       f"header claims {header_len:,} bytes but only {size - 8:,} follow")
            raw_header = f.read(header_len)
            data = f.read()
    except OSError as e:
        raise os_error(e, "read safetensors file", path) from e
    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"safetensors file {path} has a corrupt header (not JSON: {e}); the file is damaged "
                               f"or not a safetensors file") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"safetensors file {path} has a corrupt header (a JSON {type(header).__name__}, "
                               f"not an object)")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, start = _entry(path, name, info, len(data))
        out[name] = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start).reshape(shape)
    return out


def read_dir(directory: str) -> dict[str, np.ndarray]:
    """All tensors of every *.safetensors file in `directory` (sharded checkpoints are merged)."""
    tensors, origin = {}, {}
    for path in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
        for name, array in read_file(path).items():
            if name in tensors:
                raise SafetensorsError(f"tensor {name!r} is in both {origin[name]} and {path}")
            tensors[name], origin[name] = array, path
    return tensors


def write_file(path: str, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Writes `tensors` atomically: a crash or a full disk leaves the previous file (or none), never a torn one."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        blob = array.tobytes()
        header[name] = {"dtype": _NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = metadata or {"format": "pt"}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # keep the data 8-byte aligned
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(encoded)))
            f.write(encoded)
            for blob in blobs:
                f.write(blob)
