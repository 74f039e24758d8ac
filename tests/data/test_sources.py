import gzip
import json

import pytest

from helpers import write_hostile_inputs
from llm_jax.data.sources import InputStats, SourceError, input_files, read_documents, source_hashes


def read(paths, **kw):
    stats = InputStats()
    return list(read_documents([str(p) for p in paths], stats, **kw)), stats


def test_text_jsonl_and_gzip(tmp_path):
    (tmp_path / "a.txt").write_text("doc a")
    rows = [{"text": "row one"}, {"text": "row two"}, {"other": "no text field"}, {"text": ""}, {"text": 5}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps({"body": "gz body"}) + "\n")
    docs, stats = read([tmp_path])
    assert docs == ["doc a", "row one", "row two"]
    assert stats["missing_field"] == 3 and stats["bad_json_lines"] == 1 and stats["empty_documents"] == 1
    docs, _ = read([tmp_path / "c.jsonl.gz"], text_field="body")
    assert docs == ["gz body"]


def test_bad_bytes_and_empty_inputs_are_counted_not_fatal(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 ok \xff\xfe end")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"  \n\n ")
    docs, stats = read([tmp_path])
    assert docs == ["caf\ufffd ok \ufffd\ufffd end"]
    assert stats["non_utf8_documents"] == 1 and stats["empty_files"] == 2 and stats["files"] == 3


def test_paragraph_unit(tmp_path):
    (tmp_path / "p.txt").write_text("one\ntwo\n\n  \nthree\n")
    docs, _ = read([tmp_path / "p.txt"], text_unit="paragraph")
    assert docs == ["one\ntwo", "three\n"]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow (the parquet extra) is not installed")
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": ["p1", None, "p2"], "n": [1, 2, 3]}), tmp_path / "t.parquet")
    docs, stats = read([tmp_path / "t.parquet"])
    assert docs == ["p1", "p2"] and stats["missing_field"] == 1
    docs, stats = read([tmp_path / "t.parquet"], text_field="absent")
    assert docs == [] and stats["missing_field"] == 3
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])  # truncated: no footer
    docs, stats = read([tmp_path / "t.parquet"])
    assert docs == [] and stats["unreadable_files"] == 1


def test_missing_inputs_and_hashes(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        input_files([str(tmp_path / "nope")])
    (tmp_path / "x.txt").write_text("x")
    hashes = source_hashes([str(tmp_path)])
    assert list(hashes.values()) == ["2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"]


def test_hostile_inputs_are_counted_and_skipped_never_fatal(tmp_path):
    write_hostile_inputs(tmp_path)
    docs, stats = read([tmp_path])
    assert sorted(docs) == sorted(["a good document with words", "abc\ufffddef", "fine row",
                                   "caf\ufffd cr\ufffdme br\ufffdl\ufffde, d\ufffdj\ufffd vu \ufffd la carte"])
    assert stats["invalid_unicode_documents"] == 1 and stats["non_utf8_documents"] == 1
    assert stats["bad_json_lines"] == 2 and stats["corrupt_archives"] == 3
    assert stats["unreadable_files"] == 2 and stats["binary_files"] == 3 and stats["files"] == 11
    assert stats.hashes[str(tmp_path / "dangling.txt")] == "unreadable"
    assert len(stats.hashes[str(tmp_path / "truncated.jsonl.gz")]) == 64  # its bytes were read: hashed
    hashes = source_hashes([str(tmp_path)])  # used to crash on the dangling link
    assert hashes[str(tmp_path / "dangling.txt")] == hashes[str(tmp_path / "fifo.txt")] == "unreadable"
    assert hashes[str(tmp_path / "good.txt")] == stats.hashes[str(tmp_path / "good.txt")]
    docs, stats = read([tmp_path / "dangling.txt", tmp_path / "image.md"])  # named inputs: counted too
    assert docs == [] and stats["unreadable_files"] == 1 and stats["binary_files"] == 1


def test_a_file_that_vanishes_while_reading_is_counted(tmp_path):
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "b.txt").write_text("second")
    stats = InputStats()
    docs = read_documents([str(tmp_path)], stats)
    assert next(docs) == "first"
    (tmp_path / "b.txt").unlink()
    assert list(docs) == [] and stats["unreadable_files"] == 1


def test_binary_detection_by_content():
    from llm_jax.data.sources import looks_binary
    assert looks_binary(b"text\x00more") and looks_binary(bytes(range(1, 32)) * 10)
    assert not looks_binary(b"") and not looks_binary("plain text\twith tabs\r\n and ünïcödé".encode())
    assert not looks_binary("caf\xe9 ".encode("latin-1") * 50)  # mostly ASCII: text with a bad encoding
