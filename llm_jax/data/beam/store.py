"""The Beam pipeline's files — its inputs, work directory and output — on a local path or on an object store Apache
Beam knows (`gs://`, `s3://`: Beam's `FileSystems`, with the runner's extra installed, e.g. `apache-beam[gcp]`), so
that the workers of a cluster runner share the work directory without a mounted file system. Not HDFS: its listing
is not recursive and its rename does not replace a file.

Every write is atomic: a local file through llm_jax.fileio (temporary file, fsync, rename); a remote one to a
temporary name renamed onto the final one once complete — a killed worker leaves the file whole or absent. Arrays are
read by plain reads (a slice of rows seeks to it), never through a memory map, which a remote file cannot give and
whose pages would count in a worker's resident memory.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import uuid
from typing import IO, Any, Iterator

import numpy as np

from llm_jax.data.shards import PreparedDataError
from llm_jax.fileio import atomic_path, atomic_write_json

try:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems
except ImportError:  # the `beam` extra; local paths still work without it
    FileSystems = CompressionTypes = None


TMP = ".llm_jax-tmp-"  # in the name of an object being written: never listed, copied or taken for the real one


def is_remote(path: str) -> bool:
    """A path with a scheme (gs://, s3://, ...): read and written through Beam's FileSystems."""
    return "://" in path


def _fs():
    if FileSystems is None:
        raise PreparedDataError("a remote path needs apache-beam: pip install 'llm_jax[beam]'")
    return FileSystems


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_remote(base) else os.path.join(base, *parts)


def absolute(path: str) -> str:
    return path.rstrip("/") if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    return _fs().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path: str) -> None:
    """A local directory; nothing for a remote path (object stores have no directories)."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def _metadata(path: str):
    """Beam's FileMetadata of one remote file (size, last update); an error when there is none."""
    found = _fs().match([path])[0].metadata_list
    if len(found) != 1:
        raise FileNotFoundError(path)
    return found[0]


def size(path: str) -> int:
    """The file's size in bytes, 0 when it is not a readable file."""
    if is_remote(path):  # an error reaching the store is raised, not taken for an empty file
        try:
            return _metadata(path).size_in_bytes
        except FileNotFoundError:
            return 0
    try:
        return os.path.getsize(path) if os.path.isfile(path) else 0
    except OSError:
        return 0


def stamp(path: str) -> list | None:
    """[size, modification time] of a file (what tells a resumed run that an input changed), None if unreadable."""
    try:
        if is_remote(path):
            meta = _metadata(path)
            return [meta.size_in_bytes, meta.last_updated_in_seconds]
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except Exception:  # noqa: BLE001
        return None


def files_under(path: str, suffixes: tuple[str, ...]) -> list[str]:
    """The files with one of `suffixes` under a remote prefix (a "directory") or matching a glob, sorted."""
    pattern = path if any(c in path for c in "*?[") else path.rstrip("/") + "/**"
    return sorted(p for p in _listed(pattern) if p.endswith(suffixes))


def _listed(pattern: str) -> list[str]:
    """The objects matching `pattern`, without those still being written and the "folder" objects some consoles
    make (names ending in /)."""
    return [m.path for m in _fs().match([pattern])[0].metadata_list
            if TMP not in m.path and not m.path.endswith("/")]


def open_read(path: str) -> IO[bytes]:
    """The file's bytes as a seekable binary stream."""
    if is_remote(path):  # buffered here: a store's reader may serve readline a byte per call
        return io.BufferedReader(_fs().open(path, compression_type=CompressionTypes.UNCOMPRESSED), 1 << 20)
    return open(path, "rb")


@contextlib.contextmanager
def writing(path: str) -> Iterator[IO[bytes]]:
    """A binary stream whose bytes replace `path` atomically when the block succeeds."""
    if not is_remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            yield f
        return
    fs = _fs()
    tmp = f"{path}{TMP}{uuid.uuid4().hex}"
    try:
        with fs.create(tmp, mime_type="application/octet-stream",
                       compression_type=CompressionTypes.UNCOMPRESSED) as f:
            yield f
        fs.rename([tmp], [path])
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete([tmp])
        raise


def write_bytes(path: str, data: bytes) -> None:
    with writing(path) as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def write_json(path: str, obj: Any, **dump_kwargs) -> None:
    if is_remote(path):
        write_bytes(path, json.dumps(obj, **dump_kwargs).encode("utf-8"))
    else:
        atomic_write_json(path, obj, **dump_kwargs)


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path))


def save(path: str, array: np.ndarray) -> None:
    """np.save's bytes, atomically."""
    array = np.asarray(array)
    with writing(path) as f:  # C order always: load() reads no other (a transposed array would be saved Fortran)
        np.save(f, array if array.flags.c_contiguous else np.ascontiguousarray(array))


def _read_into(f: IO[bytes], out: np.ndarray, path: str) -> None:
    view, got = memoryview(out.reshape(-1).view(np.uint8)), 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            raise PreparedDataError(f"{path}: ends early ({len(view) - got} of {len(view)} bytes of a read missing)")
        got += n


def load(path: str) -> np.ndarray:
    """The .npy at `path`, by one read (a writable array)."""
    with open_read(path) as f:
        shape, dtype, _ = _header(f, path)
        out = np.empty(shape, dtype)
        _read_into(f, out, path)
        return out


def load_slices(slices: list[tuple[str, int, int]]) -> np.ndarray | None:
    """Rows [start, stop) of each .npy in `slices` ((path, start, stop), all of one row shape and dtype),
    concatenated: each read by a seek and one read straight into its place in the result; None for no slices."""
    out, at, total = None, 0, sum(stop - start for _, start, stop in slices)
    for path, start, stop in slices:
        with open_read(path) as f:
            shape, dtype, row_bytes = _header(f, path)
            if out is None:
                out = np.empty((total,) + tuple(shape[1:]), dtype)
            f.seek(f.tell() + start * row_bytes)
            _read_into(f, out[at:at + stop - start], path)
        at += stop - start
    return out


def _header(f: IO[bytes], path: str) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, bytes per row) of the .npy open in `f`, which is left at the first row."""
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if fortran or dtype.hasobject:
        raise PreparedDataError(f"{path}: not a C-ordered array of numbers")
    return shape, dtype, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize


def load_rows(path: str, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` (any order, repeats allowed) of the .npy at `path`: a local file is read a row at a time, a remote
    one whole (a seek there is a new request)."""
    with open_read(path) as f:
        shape, dtype, row_bytes = _header(f, path)
        if is_remote(path):
            whole = np.empty(shape, dtype)
            _read_into(f, whole, path)
            return whole[rows]
        wanted, inverse = np.unique(rows, return_inverse=True)
        out, base = np.empty((len(wanted),) + tuple(shape[1:]), dtype), f.tell()
        for i, r in enumerate(wanted.tolist()):
            f.seek(base + r * row_bytes)
            _read_into(f, out[i:i + 1], path)
        return out[inverse.ravel()]


def npy_pieces(path: str, start: int, lengths: np.ndarray) -> Iterator[np.ndarray]:
    """Consecutive pieces of the 1-D .npy at `path` from element `start` on, of the given lengths, read in order."""
    with open_read(path) as f:
        _, dtype, _ = _header(f, path)
        f.seek(f.tell() + start * dtype.itemsize)
        for n in lengths.tolist():
            out = np.empty(n, dtype)
            _read_into(f, out, path)
            yield out


def npy_blocks(path: str, block: int = 1 << 24) -> Iterator[np.ndarray]:
    """The 1-D array of the .npy `path`, `block` elements at a time."""
    with open_read(path) as f:
        shape, dtype, _ = _header(f, path)
        left = int(np.prod(shape))
        while left:
            out = np.empty(min(block, left), dtype)
            _read_into(f, out, path)
            left -= len(out)
            yield out


def upload(local: str, path: str) -> None:
    """Copies the local file `local` onto `path` (local or remote), atomically."""
    with open(local, "rb") as src, writing(path) as dst:
        shutil.copyfileobj(src, dst, 1 << 22)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path holding the file `path` (itself when local; for a remote one a temporary copy of its whole
    directory, so files read beside it come too — a tokenizer's config), for libraries that read from a path."""
    if not is_remote(path):
        yield path
        return
    directory, name = path.rstrip("/").rsplit("/", 1)
    with tempfile.TemporaryDirectory(prefix="llm_jax-") as tmp:
        for file in listdir(directory):
            with open_read(join(directory, file)) as src, open(os.path.join(tmp, file), "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
        yield os.path.join(tmp, name)


def listdir(path: str) -> list[str]:
    """Names of the files directly in `path` (empty when there is none)."""
    if not is_remote(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    prefix = path.rstrip("/") + "/"
    return sorted(p[len(prefix):] for p in _listed(prefix + "*") if "/" not in p[len(prefix):])


def remove_tree(path: str) -> None:
    """Deletes a directory (remote: every object under the prefix); nothing when it is absent."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    found = [m.path for m in _fs().match([path.rstrip("/") + "/**"])[0].metadata_list]
    if found:
        _fs().delete(found)


def copy_tree(src: str, dst: str, last: str) -> None:
    """Copies every file under `src` to the same place under `dst`, the file named `last` after all the others (a
    reader that finds it finds the rest)."""
    prefix = src.rstrip("/") + "/"
    found = sorted(_listed(prefix + "**"))
    for path in sorted(found, key=lambda p: p[len(prefix):] == last):
        _fs().copy([path], [join(dst, path[len(prefix):])])  # one object each: whole or absent
