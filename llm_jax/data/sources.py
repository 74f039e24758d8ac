"""Documents from inputs: text files, JSONL, Parquet, TFDS datasets (array_record, no TensorFlow), and the
embedded corpus — with every kind of bad input counted instead of crashing the job.

Inputs are paths (files or directories, read in sorted order) or `tfds:NAME[/CONFIG][:SPLIT]`. A text file is
one document, or with `text_unit="paragraph"` one document per blank-line-separated block. JSONL and Parquet
rows give one document each from their `text_field`. Only a named input that does not exist at all is an
error (`SourceError`, before any work); everything else that cannot be read is counted in `InputStats` and
skipped, and the job goes on.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
import re
import stat
import zlib
from typing import Iterator

from llm_jax.errors import UserError

TEXT_SUFFIXES = (".txt", ".md", ".text")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
UNREADABLE = "unreadable"  # the hash recorded for an input whose bytes could not be read

# A file is binary (skipped, counted) when the first BINARY_SAMPLE_BYTES of its (decompressed) content hold a
# NUL byte, or more than BINARY_ODD_FRACTION of them are control bytes or bytes of invalid UTF-8.
BINARY_SAMPLE_BYTES = 8192
BINARY_ODD_FRACTION = 0.3
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\v\f\r\b\x1b") + b"\x7f"
_SURROGATES = re.compile("[\ud800-\udfff]")


class SourceError(UserError):
    """An input that cannot be read at all (missing path, unknown dataset, missing optional library)."""


class InputStats(collections.Counter):
    """Counts of what reading found; every count is a key of the prepared manifest's `counts.input`.

    files                      input files (and TFDS splits) visited
    documents_in               documents produced (before empty ones are dropped)
    empty_files                files with no non-blank byte (skipped)
    empty_documents            blank documents or JSONL/Parquet fields (skipped)
    non_utf8_documents         documents with invalid UTF-8 bytes: kept, each bad byte replaced by U+FFFD
    invalid_unicode_documents  documents holding lone surrogates (e.g. JSON "\\ud800"): kept, each replaced by U+FFFD
    missing_field              JSONL/Parquet/TFDS rows without a text `text_field` (skipped)
    bad_json_lines             JSONL lines that are not JSON (skipped)
    binary_files               files whose content is binary (NUL or control bytes; see `looks_binary`), skipped
    corrupt_archives           .gz files that are truncated, fail their checksum or are not gzip: skipped whole
    unreadable_files           files that vanished, dangling links, non-regular files, permission errors, corrupt
                               Parquet: skipped (a Parquet file keeps the rows read before the damage)

    `hashes` maps each input read to the sha256 of its bytes (computed while reading), `"tfds"` for a TFDS
    split, or `UNREADABLE`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hashes: dict[str, str] = {}


def json_objects(raw: bytes) -> tuple[list[dict], dict[str, int]]:
    """(the JSON objects, {"lines", "not_json"}) of a JSON-lines file's bytes: blank lines are ignored, a line that
    is not a JSON object is counted and skipped."""
    records, counts = [], {"lines": 0, "not_json": 0}
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        counts["lines"] += 1
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            counts["not_json"] += 1
    return records, counts


def looks_binary(sample: bytes) -> bool:
    """True for content that is not text: a NUL byte, or a high fraction of control / invalid UTF-8 bytes."""
    if b"\0" in sample:
        return True
    if not sample:
        return False
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    # bytes the decoder had to replace (a multi-byte character cut at the sample's end counts once: harmless)
    invalid = sample.decode("utf-8", errors="replace").count("\ufffd") - sample.count("\ufffd".encode())
    return (controls + invalid) > BINARY_ODD_FRACTION * len(sample)


def _decode(raw: bytes, stats: InputStats) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats["non_utf8_documents"] += 1  # kept, with U+FFFD where the bytes were invalid
        return raw.decode("utf-8", errors="replace")


def _emit(text: str, stats: InputStats) -> Iterator[str]:
    stats["documents_in"] += 1
    if not text.isascii() and _SURROGATES.search(text):
        stats["invalid_unicode_documents"] += 1  # repaired: a lone surrogate cannot be encoded as UTF-8
        text = _SURROGATES.sub("\ufffd", text)
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


def _read_regular_file(path: str) -> bytes:
    """The bytes of `path`; OSError for anything but a regular file (a FIFO would block, a device never end)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f"{path} is not a regular file")
    with open(path, "rb") as f:
        return f.read()


def _file_bytes(path: str, stats: InputStats) -> bytes | None:
    """The file's text bytes (gunzipped), hashed into `stats.hashes`; None — counted — for a file that is
    unreadable, a corrupt archive, binary or blank."""
    try:
        raw = _read_regular_file(path)
    except OSError:
        stats["unreadable_files"] += 1
        stats.hashes[path] = UNREADABLE
        return None
    stats.hashes[path] = hashlib.sha256(raw).hexdigest()
    if path.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            stats["corrupt_archives"] += 1
            return None
    if looks_binary(raw[:BINARY_SAMPLE_BYTES]):
        stats["binary_files"] += 1
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
        text = _decode(raw, stats)
        del raw  # hold one copy of a large file, not two
        yield from _emit(text, stats)


def _jsonl_file(path: str, field: str, stats: InputStats) -> Iterator[str]:
    raw = _file_bytes(path, stats)
    if raw is None:
        return
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(_decode(line, stats))
        except (ValueError, RecursionError):  # not JSON, an integer past Python's digit limit, absurd nesting
            stats["bad_json_lines"] += 1
            continue
        yield from _emit_field(row.get(field) if isinstance(row, dict) else None, stats)


def _parquet_file(path: str, field: str, stats: InputStats) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise SourceError("reading Parquet needs pyarrow: pip install 'llm_jax[parquet]'") from e
    stats.hashes[path] = file_sha256(path)
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
    batches = table.iter_batches(columns=[field])
    while True:
        try:
            batch = next(batches, None)
        except Exception:  # a corrupt page: the rows read before it are kept
            stats["unreadable_files"] += 1
            return
        if batch is None:
            return
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
    stats.hashes[spec] = "tfds"
    for i in range(len(source)):
        example = source[i]
        yield from _emit_field(example.get(field) if isinstance(example, dict) else None, stats)


def input_files(inputs: list[str]) -> list[str]:
    """Expands directories (recursively, sorted) into the files they hold with a known suffix. A directory
    entry that cannot be listed, or a named input that is a dangling link or not a regular file, is kept
    (reading it counts it as unreadable); a named input that does not exist at all is a SourceError."""
    files = []
    for item in inputs:
        if item.startswith("tfds:"):
            files.append(item)
        elif os.path.isdir(item):
            suffixes = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
            unlistable: list[str] = []  # directories os.walk could not list: counted as unreadable on reading
            walk = os.walk(item, onerror=lambda e: unlistable.append(e.filename))
            found = [os.path.join(root, f) for root, _, fs in walk for f in fs if f.endswith(suffixes)]
            files.extend(sorted(found + [p for p in unlistable if p]))
        elif os.path.lexists(item):
            files.append(item)
        else:
            raise SourceError(f"input {item!r} does not exist")
    return files


def read_documents(inputs: list[str], stats: InputStats, text_field: str = "text", text_unit: str = "file",
                   tfds_dir: str | None = None) -> Iterator[str]:
    """The documents of `inputs`, in order; what could not be read is counted in `stats` (see InputStats)."""
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


def file_sha256(path: str) -> str:
    """sha256 of the file's bytes, or UNREADABLE (a dangling link, a vanished or non-regular file)."""
    h = hashlib.sha256()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return UNREADABLE
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return UNREADABLE
    return h.hexdigest()


def source_hashes(inputs: list[str]) -> dict[str, str]:
    """sha256 of every input file (TFDS inputs by name; UNREADABLE for files that cannot be read), without
    reading documents: what the data cache is keyed by."""
    return {path: "tfds" if path.startswith("tfds:") else file_sha256(path) for path in input_files(inputs)}
