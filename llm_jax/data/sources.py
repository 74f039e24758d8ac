"""Documents from inputs: text files, JSONL, Parquet, TFDS datasets (array_record, no TensorFlow), and the
embedded corpus — with every kind of bad input counted instead of crashing the job.

Inputs are paths (files or directories, read in sorted order) or `tfds:NAME[/CONFIG][:SPLIT]`. A text file is
one document, or with `text_unit="paragraph"` one document per blank-line-separated block. JSONL and Parquet
rows give one document each from their `text_field`.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
import re
from typing import Iterator

TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)


class SourceError(ValueError):  # noqa: N818 (a user-facing error, reported as one line)
    """An input that cannot be read at all (missing path, unknown dataset, missing optional library)."""


class InputStats(collections.Counter):
    """Counts of what reading found: files, empty_files, documents_in, empty_documents, non_utf8_documents,
    missing_field, bad_json_lines, unreadable_files."""


def _decode(raw: bytes, stats: InputStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats["non_utf8_documents"] += 1  # kept, with U+FFFD where the bytes were invalid
        return raw.decode("utf-8", errors="replace")


def _emit(text: str, stats: InputStats) -> Iterator[str]:
    stats["documents_in"] += 1
    if text.strip():
        yield text
    else:
        stats["empty_documents"] += 1


def _emit_field(value, stats: InputStats) -> Iterator[str]:
    """A record's text field (str, or UTF-8 bytes), counted as missing when it is neither."""
    if isinstance(value, bytes):
        value = _decode(value, stats)
    if not isinstance(value, str):
        stats["missing_field"] += 1
        return
    yield from _emit(value, stats)


def _file_bytes(path: str, stats: InputStats) -> bytes | None:
    """The file's bytes (gunzipped), or None — counted — for an unreadable or blank file."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError:
        stats["unreadable_files"] += 1
        return None
    if not raw.strip():
        stats["empty_files"] += 1
        return None
    return raw


def _text_file(path: str, unit: str, stats: InputStats) -> Iterator[str]:
    raw = _file_bytes(path, stats)
    if raw is None:
        return
    if unit == "paragraph":
        for block in re.split(rb"\n\s*\n", raw):
            if block.strip():
                yield from _emit(_decode(block, stats), stats)
    else:
        yield from _emit(_decode(raw, stats), stats)


def _jsonl_file(path: str, field: str, stats: InputStats) -> Iterator[str]:
    raw = _file_bytes(path, stats)
    if raw is None:
        return
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(_decode(line, stats))
        except json.JSONDecodeError:
            stats["bad_json_lines"] += 1
            continue
        yield from _emit_field(row.get(field) if isinstance(row, dict) else None, stats)


def _parquet_file(path: str, field: str, stats: InputStats) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise SourceError("reading Parquet needs pyarrow: pip install 'llm_jax[parquet]'") from e
    try:
        table = pq.ParquetFile(path)
    except Exception:  # pyarrow raises ArrowInvalid/OSError for corrupt or truncated files
        stats["unreadable_files"] += 1
        return
    if field not in table.schema_arrow.names:
        stats["missing_field"] += table.metadata.num_rows
        return
    if table.metadata.num_rows == 0:
        stats["empty_files"] += 1
        return
    for batch in table.iter_batches(columns=[field]):
        for value in batch.column(0).to_pylist():
            yield from _emit_field(value, stats)


def _tfds(spec: str, field: str, data_dir: str | None, stats: InputStats) -> Iterator[str]:
    """`tfds:NAME[/CONFIG][:SPLIT]` through `tfds.data_source` (array_record files; no TensorFlow needed)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise SourceError("TFDS inputs need tensorflow-datasets: pip install 'llm_jax[tfds]'") from e
    name, _, split = spec[len("tfds:"):].partition(":")
    try:
        source = tfds.data_source(name, split=split or "train", data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises DatasetNotFoundError, AssertionError, ... for missing data
        raise SourceError(f"cannot open TFDS dataset {spec!r}: {e}") from e
    for i in range(len(source)):
        example = source[i]
        yield from _emit_field(example.get(field) if isinstance(example, dict) else None, stats)


def input_files(inputs: list[str]) -> list[str]:
    """Expands directories (recursively, sorted) into the readable files they hold."""
    files = []
    for item in inputs:
        if item.startswith("tfds:"):
            files.append(item)
        elif os.path.isdir(item):
            suffixes = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
            files.extend(sorted(os.path.join(root, f) for root, _, fs in os.walk(item) for f in fs
                                if f.endswith(suffixes)))
        elif os.path.isfile(item):
            files.append(item)
        else:
            raise SourceError(f"input {item!r} does not exist")
    return files


def read_documents(inputs: list[str], stats: InputStats, text_field: str = "text", text_unit: str = "file",
                   tfds_dir: str | None = None) -> Iterator[str]:
    for path in input_files(inputs):
        stats["files"] += 1
        if path.startswith("tfds:"):
            yield from _tfds(path, text_field, tfds_dir, stats)
        elif path.endswith(JSONL_SUFFIXES):
            yield from _jsonl_file(path, text_field, stats)
        elif path.endswith(PARQUET_SUFFIXES):
            yield from _parquet_file(path, text_field, stats)
        else:
            yield from _text_file(path, text_unit, stats)


def source_hashes(inputs: list[str]) -> dict[str, str]:
    """sha256 of every input file (TFDS inputs by name), for the manifest."""
    out = {}
    for path in input_files(inputs):
        if path.startswith("tfds:"):
            out[path] = "tfds"
            continue
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[path] = h.hexdigest()
    return out
