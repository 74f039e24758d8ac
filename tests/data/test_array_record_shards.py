"""Prepared shards in ArrayRecord format read exactly like the numpy ones: same windows, same slices, and Grain
reads the files."""

import json
import os

import numpy as np
import pytest

from llm_jax.data.beam.store import npy_blocks
from llm_jax.data.loader import BatchLoader, PackedWindows
from llm_jax.data.shards import (MANIFEST, MANIFEST_VERSION, PreparedDataError, PreparedSplit, RecordTokens,
                                 token_dtype, write_array_record_shard, write_npy_stream, write_shards)

EOS = 0


def random_docs(rng, n, vocab_size, long_len=3000):
    """`n` documents, each ending with EOS: random lengths 1..40 (some just EOS) and one of `long_len` tokens."""
    lengths = rng.integers(0, 40, n)
    lengths[rng.choice(n, 5, replace=False)] = 0
    lengths[n // 2] = long_len - 1
    return [np.append(rng.integers(1, vocab_size, k), EOS).astype(token_dtype(vocab_size)) for k in lengths]


def write_prepared(directory, docs_by_split, vocab_size, n_shards=3, formats=("numpy", "array_record")):
    """A prepared directory (manifest + shards of both splits) holding these documents; returns its manifest."""
    splits = {}
    for split, docs in docs_by_split.items():
        shards = write_shards(str(directory), split, docs, n_shards, token_dtype(vocab_size), formats=formats)
        splits[split] = {"documents": len(docs), "tokens": sum(s["tokens"] for s in shards), "shards": shards}
    manifest = {"version": MANIFEST_VERSION, "unigram_entropy": 1.0, "splits": splits,
                "tokenizer": {"file": "tokenizer.json", "sha256": "0" * 64, "vocab_size": vocab_size}}
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="module", params=[1000, 100_000], ids=["uint16", "uint32"])
def prepared(request, tmp_path_factory):
    """(directory, documents by split) for a vocabulary that needs uint16 tokens, then one that needs uint32."""
    rng = np.random.default_rng(request.param)
    docs = {"train": random_docs(rng, 400, request.param), "val": random_docs(rng, 60, request.param, 500)}
    directory = tmp_path_factory.mktemp("prepared")
    write_prepared(directory, docs, request.param)
    return directory, docs


def test_windows_through_array_record_equal_windows_through_numpy(prepared):
    directory, _ = prepared
    for split in ("train", "val"):
        numpy_split = PreparedSplit(str(directory), split, read_format="numpy")
        record_split = PreparedSplit(str(directory), split, read_format="array_record")
        assert all(isinstance(t, RecordTokens) for t in record_split.tokens)
        assert record_split.num_tokens == numpy_split.num_tokens
        np.testing.assert_array_equal(record_split.stream(), numpy_split.stream())
        for seq_len in (16, 7):
            expected, got = PackedWindows.from_split(numpy_split, seq_len), PackedWindows.from_split(record_split,
                                                                                                    seq_len)
            assert len(got) == len(expected) > 0
            for i in range(len(expected)):
                for name in ("tokens", "segments"):
                    np.testing.assert_array_equal(got[i][name], expected[i][name], err_msg=f"{split} {i} {name}")
    loaders = [BatchLoader([PackedWindows.from_split(PreparedSplit(str(directory), "train", read_format=f), 16)],
                           8, seed=3) for f in ("numpy", "array_record")]
    batches = zip(range(6), loaders[0].iterate(0, prefetch=2), loaders[1].iterate(0, prefetch=2))  # threads read
    for _, a, b in batches:
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_record_token_slices_equal_the_numpy_stream(prepared):
    directory, _ = prepared
    numpy_split = PreparedSplit(str(directory), "train", read_format="numpy")
    record_split = PreparedSplit(str(directory), "train", read_format="array_record")
    rng = np.random.default_rng(0)
    for stream, records in zip(numpy_split.tokens, record_split.tokens):
        n = stream.size
        assert len(records) == records.size == n and records.dtype == stream.dtype
        cases = [(a, b) for a, b in rng.integers(0, n + 1, (300, 2))]  # about half of them empty (b <= a)
        cases += [(0, n), (0, 0), (n, n), (5, 5), (n - 1, n), (0, 1), (-10, None), (None, 3), (10, n + 50)]
        for a, b in cases:
            np.testing.assert_array_equal(records[a:b], stream[a:b], err_msg=f"[{a}:{b}]")
        many = int(record_split.doc_starts[0][50])  # from inside document 0 ... to the end of document 50
        np.testing.assert_array_equal(records[3:many], stream[3:many])
        assert records[7:3].shape == (0,) and records[7:3].dtype == stream.dtype
    with pytest.raises(ValueError, match="step 1"):
        record_split.tokens[0][::2]


def test_write_array_record_shard_streams_a_generator_and_grain_reads_the_records(tmp_path):
    from array_record.python.array_record_module import ArrayRecordReader
    import grain
    docs = random_docs(np.random.default_rng(1), 30, 1000)
    base = str(tmp_path / "shard-00000")
    summary = write_array_record_shard(base, (d for d in docs), np.uint16)
    assert summary == {"documents": 30, "tokens": sum(d.size for d in docs)}
    assert sorted(os.listdir(tmp_path)) == ["shard-00000.array_record", "shard-00000.docs.npy"]  # no temporaries
    np.testing.assert_array_equal(np.load(base + ".docs.npy"), np.cumsum([0] + [d.size for d in docs])[:-1])
    assert "group_size:1," in ArrayRecordReader(base + ".array_record").writer_options_string()
    source = grain.sources.ArrayRecordDataSource([base + ".array_record"])
    assert len(source) == 30
    for i in (0, 7, 15, 29):
        np.testing.assert_array_equal(np.frombuffer(source[i], "<u2"), docs[i])


def test_old_manifests_without_formats_and_array_record_only_shards_read(tmp_path):
    rng = np.random.default_rng(2)
    docs = {"train": random_docs(rng, 50, 1000, 100), "val": random_docs(rng, 10, 1000, 50)}
    (tmp_path / "old").mkdir()
    old = write_prepared(tmp_path / "old", docs, 1000, formats=("numpy",))
    for split in old["splits"].values():
        for shard in split["shards"]:
            assert shard.pop("formats") == ["numpy"]
    (tmp_path / "old" / MANIFEST).write_text(json.dumps(old))
    train = PreparedSplit(str(tmp_path / "old"), "train")
    assert isinstance(train.tokens[0], np.ndarray)
    np.testing.assert_array_equal(train.stream(), np.concatenate(docs["train"][0::3] + docs["train"][1::3]
                                                                 + docs["train"][2::3]))
    with pytest.raises(PreparedDataError, match=r"train/shard-00000: shard has no array_record copy"):
        PreparedSplit(str(tmp_path / "old"), "train", read_format="array_record")

    (tmp_path / "records").mkdir()
    write_prepared(tmp_path / "records", docs, 1000, formats=("array_record",))
    assert not any(f.endswith(".tokens.npy") for f in os.listdir(tmp_path / "records" / "train"))
    auto = PreparedSplit(str(tmp_path / "records"), "train")
    assert isinstance(auto.tokens[0], RecordTokens)
    np.testing.assert_array_equal(auto.stream(), train.stream())
    with pytest.raises(PreparedDataError, match=r"shard-00000: shard has no numpy copy"):
        PreparedSplit(str(tmp_path / "records"), "train", read_format="numpy")


def test_damaged_array_record_shards_are_one_clear_error(tmp_path):
    rng = np.random.default_rng(3)
    docs = {"train": random_docs(rng, 200, 1000, 400), "val": random_docs(rng, 10, 1000, 50)}
    manifest = write_prepared(tmp_path, docs, 1000, n_shards=2)
    path = tmp_path / "train" / "shard-00001.array_record"
    good = path.read_bytes()
    for cut in (len(good) // 2, len(good) - 10, 100, 0):
        path.write_bytes(good[:cut])
        with pytest.raises(PreparedDataError, match=r"shard-00001\.array_record: "):
            PreparedSplit(str(tmp_path), "train", read_format="array_record")
        assert isinstance(PreparedSplit(str(tmp_path), "train").tokens[1], np.ndarray)  # auto still reads numpy
    path.unlink()
    with pytest.raises(PreparedDataError, match=r"shard-00001\.array_record: missing"):
        PreparedSplit(str(tmp_path), "train", read_format="array_record")
    path.write_bytes(good)

    docs_path = tmp_path / "train" / "shard-00000.docs.npy"  # offsets that disagree with the records' lengths
    starts = np.load(docs_path)
    starts[1] += 1  # document 0 one token longer, document 1 one shorter
    np.save(docs_path, starts)
    split = PreparedSplit(str(tmp_path), "train", read_format="array_record")
    with pytest.raises(PreparedDataError, match=r"shard-00000\.array_record: record 0 holds \d+ bytes"):
        split.tokens[0][:5]
    with pytest.raises(PreparedDataError, match=r"shard-00000\.array_record: record"):
        split.stream()
    assert manifest["splits"]["train"]["shards"][0]["formats"] == ["numpy", "array_record"]


@pytest.mark.parametrize("vocab_size", [300, 70_000])
def test_a_streamed_npy_is_np_save_bytes_and_reads_back_in_blocks(tmp_path, vocab_size):
    docs = random_docs(np.random.default_rng(3), 50, vocab_size)
    whole = np.concatenate(docs)
    np.save(tmp_path / "saved.npy", whole)
    write_npy_stream(str(tmp_path / "streamed.npy"), iter(docs), token_dtype(vocab_size), len(whole))
    assert (tmp_path / "streamed.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()
    blocks = list(npy_blocks(str(tmp_path / "streamed.npy"), block=1000))
    assert [len(b) for b in blocks] == [1000] * (len(whole) // 1000) + [len(whole) % 1000]
    assert np.array_equal(np.concatenate(blocks), whole) and blocks[0].dtype == whole.dtype
    write_npy_stream(str(tmp_path / "empty.npy"), iter([]), token_dtype(vocab_size), 0)
    assert list(npy_blocks(str(tmp_path / "empty.npy"))) == [] and np.load(tmp_path / "empty.npy").shape == (0,)


def test_a_short_stream_or_a_truncated_npy_is_an_error(tmp_path):
    docs = [np.arange(10, dtype=np.uint16)] * 3
    with pytest.raises(ValueError, match="25"):
        write_npy_stream(str(tmp_path / "x.npy"), iter(docs), np.uint16, 25)
    assert not (tmp_path / "x.npy").exists()  # nothing half-written is left under the name
    np.save(tmp_path / "t.npy", np.concatenate(docs))
    data = (tmp_path / "t.npy").read_bytes()
    for cut in (8, 3):  # whole elements missing, or half of one
        (tmp_path / "t.npy").write_bytes(data[:-cut])
        with pytest.raises(PreparedDataError, match=r"t\.npy: ends early \(\d+ of \d+ bytes"):
            list(npy_blocks(str(tmp_path / "t.npy"), block=7))
