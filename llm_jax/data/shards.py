"""Prepared data on disk: per split, shards of concatenated document tokens with the offsets where each
document starts, and a manifest.json describing the whole directory.

    DIR/manifest.json
    DIR/tokenizer.*                       the tokenizer the tokens were made with
    DIR/{train,val}/shard-00000.tokens.npy      uint16/uint32 token stream, EOS after every document ("numpy")
    DIR/{train,val}/shard-00000.array_record    one record per document: its tokens, EOS included, as
                                                little-endian uint16/uint32 bytes ("array_record", Grain's format)
    DIR/{train,val}/shard-00000.docs.npy        int64 start offset of every document in the stream (both formats)

A shard entry's "formats" lists the copies it has (none given: ["numpy"]); the token dtype of an ArrayRecord
copy is token_dtype(the manifest's tokenizer vocab_size), the rule the writer used.

Every file is written atomically (fileio.atomic_path); reading a damaged one is one PreparedDataError naming
the file and what is wrong with it.
"""

from __future__ import annotations

import collections
import errno
import os
import threading
from typing import Iterable

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from llm_jax.errors import UserError
from llm_jax.fileio import atomic_path, read_json

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
SPLITS = ("train", "val")
FORMATS = ("numpy", "array_record")


class PreparedDataError(UserError):
    """A prepared-data directory is missing, incomplete or inconsistent."""


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def save_array(path: str, array: np.ndarray) -> None:
    """np.save, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def write_npy_stream(path: str, arrays: Iterable[np.ndarray], dtype, total: int) -> None:
    """The .npy of `arrays` concatenated (1-D, `total` elements of `dtype`: np.save's bytes), written atomically a
    piece at a time by plain writes — not through a memory map, whose written pages stay in the writer's resident
    memory until it is closed."""
    dtype = np.dtype(dtype)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (total,)})
            written = 0
            for a in arrays:
                f.write(np.asarray(a).astype(dtype, copy=False).tobytes())
                written += len(a)
            if written != total:
                raise ValueError(f"{path}: {written} elements written where the header says {total}")


def _doc_starts(lengths) -> np.ndarray:
    """int64 start offset of each document in the concatenation of documents of these lengths."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else np.zeros(0, np.int64)


def write_array_record_shard(base: str, docs_tokens: Iterable[np.ndarray], dtype) -> dict:
    """Writes `base`.array_record (one record per document, its tokens as little-endian `dtype` bytes, group size 1
    so every record is seekable alone) atomically, and `base`.docs.npy unless there already. Streams: holds one
    document at a time. Returns {"documents", "tokens"}."""
    dtype, lengths = np.dtype(dtype).newbyteorder("<"), []
    with atomic_path(base + ".array_record") as tmp:
        writer = ArrayRecordWriter(tmp, "group_size:1")
        try:
            for doc in docs_tokens:
                writer.write(np.asarray(doc).astype(dtype, copy=False).tobytes())
                lengths.append(len(doc))
            writer.close()
        except RuntimeError as e:  # riegeli reports I/O failures (a full disk) as RuntimeError
            raise OSError(errno.EIO, str(e)) from e
    starts = _doc_starts(lengths)
    if not os.path.exists(base + ".docs.npy"):
        save_array(base + ".docs.npy", starts)
    elif not np.array_equal(np.load(base + ".docs.npy"), starts):
        raise PreparedDataError(f"{base}.docs.npy: holds other document offsets than the documents just written")
    return {"documents": len(lengths), "tokens": int(sum(lengths))}


def write_shards(directory: str, split: str, docs_tokens: list[np.ndarray], n_shards: int, dtype,
                 formats: Iterable[str] = ("numpy",)) -> list[dict]:
    """Writes documents (already shuffled) round-robin into `n_shards` shards, each in every one of `formats`;
    returns their descriptions."""
    requested = list(formats)
    if not requested or not set(requested) <= set(FORMATS):
        raise ValueError(f"formats must name some of {FORMATS}, got {requested!r}")
    formats = [f for f in FORMATS if f in requested]
    os.makedirs(os.path.join(directory, split), exist_ok=True)
    shards = []
    for s in range(n_shards):
        mine = docs_tokens[s::n_shards]
        base = os.path.join(directory, split, f"shard-{s:05d}")
        entry = {"file": os.path.basename(base), "documents": len(mine), "tokens": int(sum(len(t) for t in mine)),
                 "formats": list(formats)}
        if "numpy" in formats:
            stream = np.concatenate(mine).astype(dtype, copy=False) if mine else np.zeros(0, dtype)
            save_array(base + ".tokens.npy", stream)
            save_array(base + ".docs.npy", _doc_starts([len(t) for t in mine]))
        if "array_record" in formats:
            write_array_record_shard(base, iter(mine), dtype)
        shards.append(entry)
    return shards


def shard_formats(shard: dict) -> list[str]:
    """The copies a manifest shard entry has; entries written before ArrayRecord existed are numpy only."""
    return shard.get("formats", ["numpy"])


def _known_formats(shard: dict) -> bool:
    formats = shard_formats(shard)
    return isinstance(formats, list) and bool(formats) and all(f in FORMATS for f in formats)


def _manifest_problem(manifest: dict) -> str | None:
    """What is missing from a manifest that readers rely on, or None."""
    if manifest.get("version") != MANIFEST_VERSION:
        return f"version {manifest.get('version')!r}, this llm_jax reads version {MANIFEST_VERSION}"
    tokenizer = manifest.get("tokenizer")
    if not isinstance(tokenizer, dict) or not {"file", "sha256", "vocab_size"} <= set(tokenizer):
        return "no tokenizer entry with file, sha256 and vocab_size"
    if not isinstance(manifest.get("unigram_entropy"), (int, float)):
        return "no unigram_entropy"
    splits = manifest.get("splits") if isinstance(manifest.get("splits"), dict) else {}
    for split in SPLITS:
        entry = splits.get(split) if isinstance(splits.get(split), dict) else {}
        shards = entry.get("shards")
        if not isinstance(entry.get("tokens"), int) or not isinstance(shards, list) or not all(
                isinstance(s, dict) and isinstance(s.get("file"), str) and isinstance(s.get("tokens"), int)
                and isinstance(s.get("documents"), int) and _known_formats(s) for s in shards):
            return (f"no valid {split} split (its tokens and a list of shards, each with file, tokens, documents "
                    f"and, if any, formats among {FORMATS})")
    return None


def read_manifest(directory: str) -> dict:
    """The manifest of a prepared directory, checked for what the loaders use; PreparedDataError otherwise."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise PreparedDataError(f"{directory!r} holds no prepared data (no {MANIFEST}; run `llm-jax data prepare`)")
    try:
        manifest = read_json(path, "prepared-data manifest")
    except UserError as e:  # a storage failure (StorageError) stays what it is
        raise PreparedDataError(str(e)) from e
    problem = _manifest_problem(manifest)
    if problem:
        raise PreparedDataError(f"prepared-data manifest {path} has {problem} (damaged? prepare it again)")
    return manifest


def _load_shard_array(path: str, what: str) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:
        raise PreparedDataError(f"{path}: unreadable {what} ({e or type(e).__name__})") from e
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise PreparedDataError(f"{path}: holds a {array.dtype} array of shape {array.shape}, expected a 1-D "
                                f"integer array of {what}")
    return array


class RecordTokens:
    """One ArrayRecord shard seen as its token stream, read-only and array-like (size, len, dtype, [a:b],
    np.asarray): a slice reads only the records (documents) covering it, checks each against `doc_starts`, and
    keeps the records at the ends of recent reads, which the neighbouring windows share."""

    CACHE = 8  # records kept
    CHUNK = 4096  # records fetched per read call

    def __init__(self, path: str, doc_starts: np.ndarray, total_tokens: int, dtype):
        self.path, self.doc_starts, self.size = path, doc_starts, int(total_tokens)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        n = doc_starts.size
        if (n == 0) != (self.size == 0) or n and (doc_starts[0] != 0 or doc_starts[-1] >= self.size):
            raise PreparedDataError(f"{path}: its document offsets do not fit its {self.size} tokens")
        try:
            reader = ArrayRecordReader(self.path, "readahead_buffer_size:0,max_parallelism:0")
        except RuntimeError as e:
            raise PreparedDataError(f"{self.path}: unreadable ArrayRecord shard ({e})") from e
        if not reader.ok():
            raise PreparedDataError(f"{self.path}: missing, truncated or not an ArrayRecord file")
        if reader.num_records() != self.doc_starts.size:
            raise PreparedDataError(f"{self.path}: holds {reader.num_records()} records, its offsets say "
                                    f"{self.doc_starts.size} documents (truncated or replaced?)")
        self._reader, self._lock, self._cache = reader, threading.Lock(), collections.OrderedDict()

    def __len__(self) -> int:
        return self.size

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype, copy=False)

    def __getitem__(self, key: slice) -> np.ndarray:
        """Tokens [start, stop) of the stream, a fresh array."""
        if not isinstance(key, slice):
            raise TypeError(f"RecordTokens takes slices, not {type(key).__name__}")
        start, stop, step = key.indices(self.size)
        if step != 1:
            raise ValueError("RecordTokens takes slices with step 1 only")
        out = np.empty(max(stop - start, 0), self.dtype)
        if out.size:
            first, last = np.searchsorted(self.doc_starts, [start, stop - 1], side="right") - 1
            for i, tokens in self._records(int(first), int(last) + 1):
                at = int(self.doc_starts[i]) - start  # where record i begins in `out` (< 0 for the first)
                piece = tokens[max(-at, 0): stop - start - at]
                out[max(at, 0): max(at, 0) + piece.size] = piece
        return out

    def _records(self, first: int, stop: int):
        """Yields (i, tokens) for records first..stop-1, read CHUNK per call; the two end records go through the
        cache (consecutive windows share them)."""
        ends = {first, stop - 1}
        for lo in range(first, stop, self.CHUNK):
            keys = range(lo, min(lo + self.CHUNK, stop))
            with self._lock:
                have = {i: self._cache[i] for i in ends if i in self._cache}
            missing = [i for i in keys if i not in have]
            try:
                blobs = self._reader.read(missing) if missing else []
            except RuntimeError as e:
                raise PreparedDataError(f"{self.path}: damaged ArrayRecord shard ({e})") from e
            have.update(zip(missing, map(self._decode, missing, blobs)))
            with self._lock:
                for i in ends.intersection(keys):
                    self._cache[i] = have[i]
                    self._cache.move_to_end(i)
                while len(self._cache) > self.CACHE:
                    self._cache.popitem(last=False)
            for i in keys:
                yield i, have[i]

    def _decode(self, i: int, blob: bytes) -> np.ndarray:
        end = int(self.doc_starts[i + 1]) if i + 1 < self.doc_starts.size else self.size
        expected = (end - int(self.doc_starts[i])) * self.dtype.itemsize
        if len(blob) != expected:
            raise PreparedDataError(f"{self.path}: record {i} holds {len(blob)} bytes, the document offsets say "
                                    f"{expected} (damaged, or written with another token dtype?)")
        return np.frombuffer(blob, self.dtype)


def _shard_format(shard: dict, base: str, read_format: str) -> str:
    have = shard_formats(shard)
    if read_format == "auto":
        return "numpy" if "numpy" in have else "array_record"
    if read_format not in have:
        raise PreparedDataError(f"{base}: shard has no {read_format} copy (only {', '.join(have)}); read it with "
                                f"read_format='auto' or prepare the data again with that format")
    return read_format


class PreparedSplit:
    """One split of a prepared directory, read-only: per shard, its token stream (a memory-mapped numpy array or
    a RecordTokens) and its document offsets. read_format: "auto" (numpy where a shard has it, else
    array_record), "numpy" or "array_record"."""

    def __init__(self, directory: str, split: str, read_format: str = "auto"):
        if read_format not in ("auto", *FORMATS):
            raise ValueError(f"read_format must be 'auto' or one of {FORMATS}, got {read_format!r}")
        self.directory, self.split = directory, split
        self.manifest = read_manifest(directory)
        dtype = token_dtype(self.manifest["tokenizer"]["vocab_size"])
        self.tokens, self.doc_starts = [], []
        for shard in self.manifest["splits"][split]["shards"]:
            base = os.path.join(directory, split, shard["file"])
            fmt = _shard_format(shard, base, read_format)
            starts = _load_shard_array(base + ".docs.npy", "document offsets")
            if fmt == "numpy":
                tokens = _load_shard_array(base + ".tokens.npy", "token ids")
            else:
                tokens = RecordTokens(base + ".array_record", starts, shard["tokens"], dtype)
            if tokens.size != shard["tokens"] or starts.size != shard["documents"]:
                raise PreparedDataError(f"{base}: has {tokens.size} tokens / {starts.size} documents, the manifest "
                                        f"says {shard['tokens']} / {shard['documents']} (truncated or replaced?)")
            self.tokens.append(tokens)
            self.doc_starts.append(starts)

    @property
    def num_tokens(self) -> int:
        return sum(t.size for t in self.tokens)

    def stream(self) -> np.ndarray:
        """All shards' tokens as one array (copied into memory)."""
        return np.concatenate([np.asarray(t) for t in self.tokens]) if self.tokens else np.zeros(0, np.int32)
