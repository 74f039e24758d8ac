"""Work units of the distributed preparation: every input cut into pieces a worker reads with bounded memory.

A unit is a deterministic function of the inputs and `unit_bytes`, never of the number of workers: an uncompressed
JSONL file is cut into byte ranges (a range owns the lines that start inside it, as Hadoop's input splits do), a
Parquet file into its row groups, an ArrayRecord file or a TFDS split into ranges of records; a text file, a
gzipped JSONL file (not seekable) and an embedded corpus are one unit each. Documents are numbered by
(unit, ordinal), which is the order the one-process path (`llm_jax/data/prepare.py`) reads them in.

Reading streams: a JSONL range is read a line at a time and a .jsonl.gz through `gzip.open`, so a worker holds one
document at a time (a text file is one document and is read whole). Bad input is counted in the unit's
`InputStats` exactly as the one-process readers count it (llm_jax/data/sources.py), never raised.

A JSONL, JSONL.gz or Parquet input may be remote (gs://..., through Beam's FileSystems: llm_jax/data/beam/store.py);
text and ArrayRecord files are read from a local or mounted path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import zlib
from typing import Iterator

from llm_jax.data import corpus as corpus_lib
from llm_jax.data import sources
from llm_jax.data.beam import store
from llm_jax.data.sources import InputStats, SourceError

ARRAY_RECORD_SUFFIXES = (".array_record",)
REMOTE_KINDS = ("jsonl", "jsonl_gz", "parquet")  # what a remote input (gs://...) may be


@dataclasses.dataclass(frozen=True)
class Unit:
    index: int
    path: str       # a file, `tfds:NAME[:SPLIT]`, or an embedded corpus name
    kind: str       # text | jsonl | jsonl_gz | parquet | array_record | tfds | embedded
    start: int = 0  # byte offset (jsonl), row group (parquet), record (array_record, tfds)
    stop: int = 0   # exclusive; 0 for whole-file kinds

    @property
    def first(self) -> bool:
        """The unit that counts its file (files, hashes, binary / unreadable files) in the statistics."""
        return self.start == 0

    @property
    def name(self) -> str:
        return f"u-{self.index:06d}"


def _kind(path: str) -> str:
    if path.startswith("tfds:"):
        return "tfds"
    if path.endswith(".jsonl.gz"):
        return "jsonl_gz"
    if path.endswith(sources.JSONL_SUFFIXES):
        return "jsonl"
    if path.endswith(sources.PARQUET_SUFFIXES):
        return "parquet"
    if path.endswith(ARRAY_RECORD_SUFFIXES):
        return "array_record"
    return "text"


def _record_count(path: str, kind: str, tfds_dir: str | None) -> int:
    """Records of an ArrayRecord file or a TFDS split (0 when it cannot be opened: the unit counts it)."""
    try:
        if kind == "array_record":
            from array_record.python.array_record_module import ArrayRecordReader
            reader = ArrayRecordReader(path)
            try:
                return reader.num_records()
            finally:
                reader.close()
        import tensorflow_datasets as tfds
        name, _, split = path[len("tfds:"):].partition(":")
        return len(tfds.data_source(name, split=split or "train", data_dir=tfds_dir, download=False))
    except ImportError as e:
        needs = "array_record" if kind == "array_record" else "tensorflow-datasets"
        raise SourceError(f"reading {path!r} needs {needs}: pip install 'llm_jax[beam]'") from e
    except Exception as e:  # noqa: BLE001 - a corrupt file: counted when its unit reads it
        if kind == "tfds":
            raise SourceError(f"cannot open TFDS dataset {path!r}: {e}") from e
        return 0


def plan_units(inputs: list[str], data_cfg, unit_bytes: int, unit_records: int = 100_000) -> list[Unit]:
    """The units of `inputs`, in the order the one-process path reads their documents."""
    units: list[Unit] = []
    for path in input_paths(inputs):
        kind = "embedded" if path in corpus_lib.EMBEDDED else _kind(path)
        if store.is_remote(path) and kind not in REMOTE_KINDS:
            raise SourceError(f"{path}: a remote input must be JSONL, JSONL.gz or Parquet; read text and ArrayRecord "
                              f"files from a local or mounted path")
        if kind == "jsonl":
            size = store.size(path)
            for start in range(0, max(size, 1), unit_bytes):
                units.append(Unit(len(units), path, kind, start, min(start + unit_bytes, size)))
        elif kind == "parquet":
            groups = _parquet_row_groups(path)
            for g in range(max(groups, 1)):
                units.append(Unit(len(units), path, kind, g, g + 1 if groups else 0))
        elif kind in ("array_record", "tfds"):
            count = _record_count(path, kind, data_cfg.tfds_dir or None)
            for start in range(0, max(count, 1), unit_records):
                units.append(Unit(len(units), path, kind, start, min(start + unit_records, count)))
        else:
            units.append(Unit(len(units), path, kind))
    return units


def input_paths(inputs: list[str]) -> list[str]:
    """The files of `inputs` in reading order: embedded corpora and `tfds:` splits by name, local directories
    expanded as the one-process path expands them (sources.input_files), a remote prefix or glob (gs://bucket/dir/,
    gs://bucket/*.jsonl.gz) listed through Beam's FileSystems."""
    files = []
    for item in inputs:
        if item in corpus_lib.EMBEDDED:
            files.append(item)
        elif store.is_remote(item):  # a file, or a prefix ("dir/", a bucket's root) or glob to list
            one = not item.endswith("/") and not any(c in item for c in "*?[") and store.exists(item)
            found = [item] if one else store.files_under(item, sources.JSONL_SUFFIXES + sources.PARQUET_SUFFIXES)
            if not found:
                raise SourceError(f"input {item!r} matches no JSONL or Parquet file")
            files.extend(found)
        else:
            files.extend(sources.input_files([item]))
    return files


def _sha256(path: str) -> str:
    """sources.file_sha256, for a remote file too."""
    if not store.is_remote(path):
        return sources.file_sha256(path)
    h = hashlib.sha256()
    try:
        with store.open_read(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except Exception:  # noqa: BLE001 - Beam's errors for a missing or unreadable object
        return sources.UNREADABLE
    return h.hexdigest()


@contextlib.contextmanager
def _parquet_file(path: str):
    import pyarrow.parquet as pq
    with contextlib.ExitStack() as stack:
        yield pq.ParquetFile(stack.enter_context(store.open_read(path)) if store.is_remote(path) else path)


@contextlib.contextmanager
def _gunzipped(path: str):
    with store.open_read(path) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
        yield f


def _parquet_row_groups(path: str) -> int:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:
        raise SourceError("reading Parquet needs pyarrow: pip install 'llm_jax[parquet]'") from e
    try:
        with _parquet_file(path) as table:
            return table.metadata.num_row_groups
    except Exception:  # noqa: BLE001 - corrupt: the unit counts it as unreadable
        return 0


# ------------------------------------------------------------------------------------------------- reading


def read_unit(unit: Unit, data_cfg, stats: InputStats) -> Iterator[str]:
    """The documents of `unit`; what cannot be read is counted in `stats` (as llm_jax/data/sources.py counts it)."""
    if unit.first:
        stats["files"] += 1
        if unit.kind in ("jsonl", "jsonl_gz", "parquet", "array_record"):
            stats.hashes[unit.path] = _sha256(unit.path)  # streamed
        elif unit.kind == "tfds":
            stats.hashes[unit.path] = "tfds"  # by name, as the one-process reader records it
    if unit.kind == "embedded":
        docs = corpus_lib.load_documents(unit.path)
        stats["documents_in"] += len(docs)
        yield from docs
    elif unit.kind == "jsonl":
        yield from _jsonl_range(unit, data_cfg.text_field, stats)
    elif unit.kind == "jsonl_gz":
        yield from _jsonl_gz(unit.path, data_cfg.text_field, stats)
    elif unit.kind == "parquet":
        yield from _parquet_group(unit, data_cfg.text_field, stats)
    elif unit.kind == "array_record":
        yield from _array_records(unit, data_cfg.text_field, stats)
    elif unit.kind == "tfds":
        yield from _tfds_range(unit, data_cfg.text_field, data_cfg.tfds_dir or None, stats)
    else:  # a text file: one document, or one per blank-line block (read whole, as the one-process path does)
        yield from sources._text_file(unit.path, data_cfg.text_unit, stats)


def _binary_start(path: str, opener, stats: InputStats, first: bool) -> bool:
    """True (counted once, by the file's first unit) when the file's first bytes are not text."""
    with opener(path) as f:
        sample = f.read(sources.BINARY_SAMPLE_BYTES)
    if sources.looks_binary(sample):
        if first:
            stats["binary_files"] += 1
        return True
    return False


def _jsonl_lines(lines: Iterator[bytes], field: str, stats: InputStats) -> Iterator[str]:
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(sources._decode(line, stats))
        except (ValueError, RecursionError):
            stats["bad_json_lines"] += 1
            continue
        yield from sources._emit_field(row.get(field) if isinstance(row, dict) else None, stats)


def _jsonl_range(unit: Unit, field: str, stats: InputStats) -> Iterator[str]:
    """The lines that start in [start, stop) of an uncompressed JSONL file, streamed."""
    try:
        if _binary_start(unit.path, store.open_read, stats, unit.first):
            return
        with store.open_read(unit.path) as f:
            if unit.start:
                f.seek(unit.start - 1)
                f.readline()  # the line that started before this range belongs to the previous unit
            while f.tell() < unit.stop:
                line = f.readline()
                if not line:
                    break
                yield from _jsonl_lines(iter([line]), field, stats)
    except OSError:
        if unit.first:
            stats["unreadable_files"] += 1


def _jsonl_gz(path: str, field: str, stats: InputStats) -> Iterator[str]:
    """A gzipped JSONL file, streamed twice: first checked to its end (a truncated or corrupt archive is skipped
    whole, as the one-process path skips it), then read a line at a time."""
    try:
        with _gunzipped(path) as f:
            while f.read(1 << 22):
                pass
        if _binary_start(path, _gunzipped, stats, True):
            return
        with _gunzipped(path) as f:
            yield from _jsonl_lines(iter(f), field, stats)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        stats["corrupt_archives"] += 1
    except OSError:
        stats["unreadable_files"] += 1


def _parquet_group(unit: Unit, field: str, stats: InputStats) -> Iterator[str]:
    try:
        with _parquet_file(unit.path) as table:
            if unit.stop == 0:  # no row group could be listed
                stats["unreadable_files" if table.metadata.num_rows else "empty_files"] += 1
                return
            if field not in table.schema_arrow.names:
                stats["missing_field"] += table.metadata.row_group(unit.start).num_rows
                return
            batch = table.read_row_group(unit.start, columns=[field])
    except Exception:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError for corrupt files
        stats["unreadable_files"] += 1
        return
    for value in batch.column(0).to_pylist():
        yield from sources._emit_field(value, stats)


def _record_text(record: bytes, field: str, stats: InputStats) -> Iterator[str]:
    """An ArrayRecord record: a JSON object (its `field`) or the document's UTF-8 text."""
    if record[:1] == b"{":
        try:
            row = json.loads(record)
        except (ValueError, RecursionError):
            row = None
        if isinstance(row, dict):
            yield from sources._emit_field(row.get(field), stats)
            return
    yield from sources._emit_field(record, stats)


def _array_records(unit: Unit, field: str, stats: InputStats) -> Iterator[str]:
    from array_record.python.array_record_module import ArrayRecordReader
    if unit.stop == 0:
        stats["unreadable_files"] += 1  # no record could be counted: damaged or not an ArrayRecord file
        return
    try:
        reader = ArrayRecordReader(unit.path)
        records = reader.read(list(range(unit.start, unit.stop)))
        reader.close()
    except Exception:  # noqa: BLE001 - a damaged file
        stats["unreadable_files"] += 1
        return
    for record in records:
        yield from _record_text(record, field, stats)


def _tfds_range(unit: Unit, field: str, tfds_dir: str | None, stats: InputStats) -> Iterator[str]:
    import tensorflow_datasets as tfds
    name, _, split = unit.path[len("tfds:"):].partition(":")
    source = tfds.data_source(name, split=split or "train", data_dir=tfds_dir, download=False)
    for i in range(unit.start, unit.stop):
        example = source[i]
        yield from sources._emit_field(example.get(field) if isinstance(example, dict) else None, stats)
