import gzip
import json

import pytest

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


def test_missing_inputs_and_hashes(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        input_files([str(tmp_path / "nope")])
    (tmp_path / "x.txt").write_text("x")
    hashes = source_hashes([str(tmp_path)])
    assert list(hashes.values()) == ["2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"]
