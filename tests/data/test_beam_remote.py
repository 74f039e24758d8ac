"""The Beam pipeline with its inputs, work directory and output on a remote file system — here `memfs://`, an object
store held in this process's memory and registered with Beam's FileSystems as gs:// is (no directories, rename by
copy): every file the pipeline touches must go through llm_jax/data/beam/store.py, or the run fails. A cluster
runner's workers then share the work directory without a mounted file system."""

import gzip
import io
import json
import os

import numpy as np
import pytest

pytest.importorskip("apache_beam", reason="the `beam` extra (apache-beam) is not installed")
from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem  # noqa: E402

from llm_jax import config as config_lib  # noqa: E402
from llm_jax.data.beam import store  # noqa: E402
from llm_jax.data.beam.pipeline import BeamSettings, prepare as beam_prepare  # noqa: E402
from llm_jax.data.sources import SourceError  # noqa: E402

OBJECTS: dict[str, bytes] = {}  # the store: path -> bytes


class _Upload(io.BytesIO):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def close(self):
        if not self.closed:
            OBJECTS[self.path] = self.getvalue()
        super().close()


class MemoryFileSystem(FileSystem):
    """An object store in memory (what gs:// is to Beam, with no network)."""

    @classmethod
    def scheme(cls):
        return "memfs"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        raise AssertionError(f"an object store has no directories: mkdirs({path})")

    def has_dirs(self):
        return False

    def _list(self, prefix):
        for path, data in sorted(OBJECTS.items()):
            if path.startswith(prefix):
                yield FileMetadata(path, len(data), 0.0)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        assert compression_type == CompressionTypes.UNCOMPRESSED, "store.py writes bytes as they are"
        return _Upload(path)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        assert compression_type == CompressionTypes.UNCOMPRESSED, "store.py reads bytes as they are"
        if path not in OBJECTS:
            raise BeamIOError(f"no object {path}")
        return io.BufferedReader(io.BytesIO(OBJECTS[path]))

    kill_after = None  # (prefix, n): a copy into prefix after n of them fails (a run killed while publishing)

    def copy(self, sources, destinations):
        for s, d in zip(sources, destinations):
            if MemoryFileSystem.kill_after and d.startswith(MemoryFileSystem.kill_after[0]):
                prefix, n = MemoryFileSystem.kill_after
                if n == 0:
                    raise BeamIOError("the worker was killed")
                MemoryFileSystem.kill_after = (prefix, n - 1)
            OBJECTS[d] = OBJECTS[s]

    def rename(self, sources, destinations):
        self.copy(sources, destinations)
        self.delete(sources)

    def exists(self, path):
        return path in OBJECTS

    def size(self, path):
        return len(OBJECTS[path])

    def last_updated(self, path):
        return 0.0

    def checksum(self, path):
        return str(len(OBJECTS[path]))

    def metadata(self, path):
        if path not in OBJECTS:
            raise BeamIOError(f"no object {path}")
        return FileMetadata(path, len(OBJECTS[path]), 0.0)

    def delete(self, paths):
        for path in paths:
            OBJECTS.pop(path, None)


def data_cfg():
    return config_lib.load_config(None, {"data.shards": "2", "data.val_fraction": "0.2", "data.filter.min_words": "5",
                                         "data.clean.substring_ngram": "12"}).data


def corpus_rows(small_corpus) -> tuple[bytes, bytes]:
    """Two inputs: scenes as JSONL with planted exact and near copies, and more scenes as JSONL.gz."""
    scenes = [open(os.path.join(small_corpus, f), encoding="utf-8").read() for f in sorted(os.listdir(small_corpus))]
    first = scenes[:14] + [scenes[2], scenes[7].replace("the", "thy", 3)]
    rows = lambda docs: "".join(json.dumps({"text": t}) + "\n" for t in docs).encode()  # noqa: E731
    return rows(first), gzip.compress(rows(scenes[14:24] + [scenes[15]]), mtime=0)


def remote_files(prefix: str) -> dict[str, bytes]:
    return {p[len(prefix):]: data for p, data in OBJECTS.items() if p.startswith(prefix)}


def local_files(root) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(r, f), root): open(os.path.join(r, f), "rb").read()
            for r, _, fs in os.walk(root) for f in fs}


def test_inputs_work_directory_and_output_on_a_remote_file_system(small_corpus, tmp_path, monkeypatch):
    plain, gz = corpus_rows(small_corpus)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(plain)
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(gz)
    OBJECTS.clear()
    OBJECTS["memfs://bucket/in/a.jsonl"], OBJECTS["memfs://bucket/in/b.jsonl.gz"] = plain, gz
    settings = BeamSettings(workers=1, unit_mb=0.02)  # in this process, where memfs:// is registered
    beam_prepare([str(tmp_path / "in")], str(tmp_path / "out"), data_cfg(), 400, settings, 64, log=lambda _: None)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # an os call on a memfs:// path would make ./memfs: here
    said = []
    remote = beam_prepare(["memfs://bucket/in/"], "memfs://bucket/out", data_cfg(), 400, settings, 64,
                          log=said.append)
    assert said[-1].endswith("-> memfs://bucket/out") and not os.listdir(tmp_path / "cwd")

    files, want_files = remote_files("memfs://bucket/out/"), local_files(tmp_path / "out")
    assert files.keys() == want_files.keys()
    assert any(f.endswith(".array_record") for f in files) and any(f.endswith(".tokens.npy") for f in files)
    for f in files.keys() - {"manifest.json"}:  # shards and tokenizer: the same bytes
        assert files[f] == want_files[f], f
    got, want = json.loads(files["manifest.json"]), json.loads(want_files["manifest.json"])
    assert got["counts"] == want["counts"] and got["splits"] == want["splits"]
    assert got["counts"]["exact_duplicates_removed"] == 2 and got["counts"]["near_duplicates_removed"] == 1
    assert got["pipeline"]["units"] > 2  # the plain JSONL was cut into byte ranges read by seeking
    assert list(got["sources"].values()) == list(want["sources"].values())  # the same input hashes
    assert remote["counts"] == got["counts"]
    assert not any(p.startswith("memfs://bucket/out.work") for p in OBJECTS)  # the work directory was removed
    assert not any(store.TMP in p for p in OBJECTS)

    with pytest.raises(Exception, match="exists and is not empty"):
        beam_prepare(["memfs://bucket/in/"], "memfs://bucket/out", data_cfg(), 400, settings, 64, log=said.append)

    # killed while publishing (a given tokenizer this time, saved into the remote work directory): the output holds
    # some files and no manifest; the same command finishes it
    given = str(tmp_path / "out" / "tokenizer.model")
    MemoryFileSystem.kill_after = ("memfs://bucket/again/", 3)
    try:
        with pytest.raises(BeamIOError, match="killed"):
            beam_prepare(["memfs://bucket/in/"], "memfs://bucket/again", data_cfg(), 400, settings, 64,
                         tokenizer=given, log=said.append)
    finally:
        MemoryFileSystem.kill_after = None
    assert len(remote_files("memfs://bucket/again/")) == 3 and "manifest.json" not in remote_files("memfs://bucket/again/")
    beam_prepare(["memfs://bucket/in/"], "memfs://bucket/again", data_cfg(), 400, settings, 64, tokenizer=given,
                 log=said.append)
    assert remote_files("memfs://bucket/again/") == files
    assert not os.listdir(tmp_path / "cwd")


def test_a_remote_input_must_be_one_the_workers_can_stream(tmp_path):
    OBJECTS.clear()
    OBJECTS["memfs://bucket/books/a.txt"] = b"Some text."
    settings = BeamSettings(workers=1)
    with pytest.raises(SourceError, match="matches no JSONL or Parquet file"):
        beam_prepare(["memfs://bucket/books/"], str(tmp_path / "o"), data_cfg(), 400, settings, 64,
                     log=lambda _: None)
    with pytest.raises(SourceError, match="a remote input must be JSONL"):
        beam_prepare(["memfs://bucket/books/a.txt"], str(tmp_path / "o"), data_cfg(), 400, settings, 64,
                     log=lambda _: None)


def test_arrays_are_read_by_rows_and_pieces_locally_and_remotely(tmp_path):
    OBJECTS.clear()
    rows = np.arange(60, dtype=np.uint64).reshape(20, 3)
    flat = np.arange(1000, dtype=np.uint16)
    for base in (str(tmp_path), "memfs://bucket/a"):
        store.save(store.join(base, "rows.npy"), rows)
        store.save(store.join(base, "flat.npy"), flat)
        np.testing.assert_array_equal(store.load(store.join(base, "rows.npy")), rows)
        np.testing.assert_array_equal(store.load_slices([(store.join(base, "rows.npy"), 4, 9)]), rows[4:9])
        np.testing.assert_array_equal(store.load_slices([(store.join(base, "rows.npy"), 4, 9),
                                                         (store.join(base, "rows.npy"), 0, 2)]),
                                      np.concatenate([rows[4:9], rows[0:2]]))
        picked = np.array([7, 2, 7, 19, 0])
        np.testing.assert_array_equal(store.load_rows(store.join(base, "rows.npy"), picked), rows[picked])
        np.testing.assert_array_equal(store.load_rows(store.join(base, "flat.npy"), picked), flat[picked])
        store.save(store.join(base, "transposed.npy"), rows.T)
        np.testing.assert_array_equal(store.load(store.join(base, "transposed.npy")), rows.T)
        store.save(store.join(base, "scalar.npy"), np.int64(7))
        scalar = store.load(store.join(base, "scalar.npy"))
        assert scalar.shape == () and scalar == 7
        pieces = list(store.npy_pieces(store.join(base, "flat.npy"), 10, np.array([3, 0, 5])))
        assert [p.tolist() for p in pieces] == [[10, 11, 12], [], [13, 14, 15, 16, 17]]
        assert np.concatenate(list(store.npy_blocks(store.join(base, "flat.npy"), 300))).tolist() == flat.tolist()
        assert store.load(store.join(base, "rows.npy")).flags.writeable
    assert OBJECTS["memfs://bucket/a/rows.npy"] == (tmp_path / "rows.npy").read_bytes()  # np.save's bytes both ways
    OBJECTS["memfs://bucket/a/x.npy" + store.TMP + "1"] = b"half"  # being written: not listed
    assert store.listdir("memfs://bucket/a") == ["flat.npy", "rows.npy", "scalar.npy", "transposed.npy"]
    OBJECTS["memfs://bucket/a/cut.npy"] = OBJECTS["memfs://bucket/a/flat.npy"][:-10]
    with pytest.raises(Exception, match="ends early"):
        store.load("memfs://bucket/a/cut.npy")


def test_a_remote_parquet_file_is_read_by_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from llm_jax.data.beam.units import plan_units, read_unit
    from llm_jax.data.sources import InputStats
    texts = [f"row {i} of the table" for i in range(50)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "t.parquet", row_group_size=7)
    OBJECTS.clear()
    OBJECTS["memfs://bucket/p/t.parquet"] = (tmp_path / "t.parquet").read_bytes()
    got = {}
    for path in (str(tmp_path / "t.parquet"), "memfs://bucket/p/"):
        units, stats = plan_units([path], data_cfg(), 1 << 20), InputStats()
        got[path] = (len(units), [d for u in units for d in read_unit(u, data_cfg(), stats)],
                     list(stats.hashes.values()))
    assert got["memfs://bucket/p/"] == got[str(tmp_path / "t.parquet")] and got["memfs://bucket/p/"][:2] == (8, texts)
