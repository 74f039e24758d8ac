import json
import os

import numpy as np
import pytest

from helpers import run_cli, small_config
from llm_jax.data.prepare import prepare
from llm_jax.data.shards import PreparedDataError, PreparedSplit
from llm_jax.data.sources import SourceError
from llm_jax.data.tokenizers import load_tokenizer

COUNT_KEYS = ("documents_in", "exact_duplicates_removed", "near_duplicates_removed", "filtered", "documents_out",
              "tokens_out")


@pytest.fixture(scope="module")
def messy_inputs(small_corpus, tmp_path_factory):
    """Real scenes plus an exact copy, a near copy, junk, bad bytes, empty files and broken JSONL."""
    d = tmp_path_factory.mktemp("messy")
    scenes = [open(os.path.join(small_corpus, f)).read() for f in sorted(os.listdir(small_corpus))][:30]
    for i, s in enumerate(scenes):
        (d / f"s{i:02d}.txt").write_text(s)
    (d / "copy.txt").write_text(scenes[3].upper())                       # exact duplicate after normalising
    (d / "near.txt").write_text(scenes[5].replace("the", "thee", 1) + "\nFINIS.")  # near duplicate
    (d / "junk.txt").write_text("ok")                                   # shorter than min_chars
    (d / "bytes.txt").write_bytes(scenes[7][:500].encode() + b"\xff\xfe tail words here")
    (d / "empty.txt").write_text("")
    (d / "rows.jsonl").write_text(json.dumps({"text": scenes[8][:300] + " jsonl"}) + "\n" +
                                  json.dumps({"title": "no text"}) + "\n{broken\n")
    return d


def prep_cfg(**data):
    cfg = small_config()
    cfg.model.vocab_size = 512
    cfg.data.filter.min_chars = 20
    cfg.data.update(data)
    return cfg


def test_prepare_counts_every_step_and_writes_readable_shards(messy_inputs, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("data", "prepare", "--input", messy_inputs, "--output", out, "--json",
                   "--config.model.vocab_size=512", "--config.data.filter.min_chars=20", "--config.data.shards=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {k: counts[k] for k in COUNT_KEYS[:5]} == {
        "documents_in": 35, "exact_duplicates_removed": 1, "near_duplicates_removed": 1, "filtered": 1,
        "documents_out": 32}  # 30 scenes + copy + near + junk + bad bytes + 1 JSONL row
    assert counts["input"]["non_utf8_documents"] == 1 and counts["input"]["empty_files"] == 1
    assert counts["input"]["missing_field"] == 1 and counts["input"]["bad_json_lines"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    train, val = PreparedSplit(str(out), "train"), PreparedSplit(str(out), "val")
    assert len(train.tokens) == 3 and train.num_tokens + val.num_tokens == counts["tokens_out"]
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] == 32
    tok = load_tokenizer(str(out))
    assert tok.vocab_size == 512 and manifest["tokenizer"]["kind"] == "sentencepiece"
    first_doc = train.tokens[0][: train.doc_starts[0][1]]  # documents end with EOS
    assert first_doc[-1] == tok.eos_id and (first_doc[:-1] != tok.eos_id).all()
    assert len(manifest["sources"]) == 36 and all(len(h) == 64 for h in manifest["sources"].values())


def test_existing_output_and_empty_inputs_are_errors_that_touch_nothing(messy_inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    proc = run_cli("data", "prepare", "--input", messy_inputs, "--output", out)
    assert proc.returncode == 2 and "exists and is not empty" in proc.stderr
    assert (out / "keep.txt").read_text() == "precious" and os.listdir(out) == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    proc = run_cli("data", "prepare", "--input", empty, "--output", tmp_path / "o2")
    assert proc.returncode == 2 and "yielded no documents" in proc.stderr
    assert not (tmp_path / "o2").exists()
    strict = prep_cfg()
    strict.data.filter.min_chars = 10**9
    with pytest.raises(SourceError, match="every document was removed"):
        prepare([str(messy_inputs)], str(tmp_path / "o3"), strict.data, 512, log=lambda _: None)
    assert not any(p.name.startswith(".o3") for p in tmp_path.iterdir())  # no temporary left behind


def test_parallel_tokenization_equals_serial(tmp_path):
    docs = tmp_path / "many"
    docs.mkdir()
    rows = [json.dumps({"text": f"document {i}: " + " ".join(f"w{(i * 7 + j) % 97}" for j in range(12))})
            for i in range(2500)]
    (docs / "rows.jsonl").write_text("\n".join(rows))
    outs = []
    for workers in (1, 2):
        cfg = prep_cfg(workers=workers, dedup={"exact": True, "near": False, "shingle": 5, "bands": 16, "rows": 8,
                                               "threshold": 0.8})
        out = tmp_path / f"w{workers}"
        prepare([str(docs)], str(out), cfg.data, 290, log=lambda _: None)
        outs.append(PreparedSplit(str(out), "train").stream())
    np.testing.assert_array_equal(outs[0], outs[1])


def test_perplexity_filters_with_an_ngram_and_with_a_trained_workdir(small_corpus, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, f in enumerate(sorted(os.listdir(small_corpus))[:20]):
        (mixed / f"s{i}.txt").write_text(open(os.path.join(small_corpus, f)).read())
    rng = np.random.RandomState(0)
    alphabet = list("qzxjkvw0123456789#%&*+=<>~^|{}[]QZXJKVW")
    for i in range(3):  # machine noise: random symbols in word-like runs
        (mixed / f"noise{i}.txt").write_text(" ".join("".join(rng.choice(alphabet, 6)) for _ in range(300)))
    cfg = prep_cfg()
    cfg.data.filter.update(perplexity_model="ngram", perplexity_quantile=0.12)
    manifest = prepare([str(mixed)], str(tmp_path / "ngram"), cfg.data, 512, log=lambda _: None)
    assert manifest["counts"]["filtered_by_reason"]["perplexity"] == 3
    tok = load_tokenizer(str(tmp_path / "ngram"))
    kept = tok.decode(PreparedSplit(str(tmp_path / "ngram"), "train").stream()) + \
        tok.decode(PreparedSplit(str(tmp_path / "ngram"), "val").stream())
    assert not any(len(w) == 6 and set(w) <= set(alphabet) and len(set(w) & set("#%&*+=<>~^|{}[]")) > 1
                   for w in kept.split())  # the noise documents are the ones removed

    from llm_jax.eval.perplexity import workdir_scorer
    from llm_jax.train.loop import train
    model_cfg = small_config()
    model_cfg.data.corpus, model_cfg.model.vocab_size = small_corpus, 384
    model_cfg.train.update(steps=30, eval_every=0, log_every=30)
    workdir = str(tmp_path / "ref_model")
    train(model_cfg, workdir, log=lambda _: None)
    cfg.data.filter.update(perplexity_model=workdir, perplexity_quantile=0.12)
    manifest = prepare([str(mixed)], str(tmp_path / "by_model"), cfg.data, 512, log=lambda _: None,
                       workdir_scorer=workdir_scorer)
    assert manifest["counts"]["filtered_by_reason"]["perplexity"] == 3


def test_a_vocabulary_the_corpus_cannot_fill_is_a_clear_error(tmp_path):
    from llm_jax.data.tokenizers import TokenizerError
    (tmp_path / "tiny.txt").write_text("".join(f"a b c d {i}\n\n" for i in range(20)))
    cfg = prep_cfg(val_fraction=0.5, text_unit="paragraph")
    cfg.data.filter.min_chars = 1
    with pytest.raises(TokenizerError, match="cannot train a 4000-piece sentencepiece bpe model"):
        prepare([str(tmp_path / "tiny.txt")], str(tmp_path / "o"), cfg.data, 4000, log=lambda _: None)


def test_truncated_shards_are_detected(messy_inputs, tmp_path):
    out = tmp_path / "out"
    prepare([str(messy_inputs)], str(out), prep_cfg().data, 512, log=lambda _: None)
    shard = out / "train" / "shard-00000.tokens.npy"
    np.save(shard, np.load(shard)[:-5])
    with pytest.raises(PreparedDataError, match="truncated or replaced"):
        PreparedSplit(str(out), "train")


def test_hostile_inputs_are_counted_in_the_manifest_and_the_job_completes(small_corpus, tmp_path):
    from helpers import write_hostile_inputs
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    write_hostile_inputs(hostile)
    out = tmp_path / "out"
    cfg = prep_cfg()
    cfg.data.filter.min_chars = 1
    manifest = prepare([str(hostile), small_corpus], str(out), cfg.data, 512, log=lambda _: None)
    assert manifest["counts"]["documents_out"] == 4 + 40  # 4 readable documents + the 40 scenes
    counts = manifest["counts"]["input"]
    assert {k: counts[k] for k in ("invalid_unicode_documents", "non_utf8_documents", "bad_json_lines",
                                   "corrupt_archives", "unreadable_files", "binary_files")} == {
        "invalid_unicode_documents": 1, "non_utf8_documents": 1, "bad_json_lines": 2, "corrupt_archives": 3,
        "unreadable_files": 2, "binary_files": 3}
    assert manifest["sources"][str(hostile / "dangling.txt")] == "unreadable"
    assert json.loads((out / "manifest.json").read_text())["counts"] == manifest["counts"]
    tok = load_tokenizer(str(out))
    text = tok.decode(PreparedSplit(str(out), "train").stream()) + tok.decode(PreparedSplit(str(out), "val").stream())
    assert "abc\ufffddef" in text and "\x89PNG" not in text and "ELF" not in text

    from llm_jax.data.pipeline import prepared_dir  # training reads a corpus the same way, through the cache
    cached = prepared_dir(f"{hostile},{small_corpus}", cfg.data, 512, 16, log=lambda _: None)
    assert json.loads(open(os.path.join(cached, "manifest.json")).read())["counts"]["input"] == counts


def test_output_problems_fail_before_any_input_is_read(messy_inputs, tmp_path, monkeypatch):
    import time

    from llm_jax.data import prepare as prepare_mod
    from llm_jax.data.tokenizers import TokenizerError
    from llm_jax.errors import UserError

    def must_not_read(*args, **kwargs):
        raise AssertionError("the inputs were read before the output was checked")

    monkeypatch.setattr(prepare_mod, "load_inputs", must_not_read)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    started = time.perf_counter()
    for output, message in ((a_file, "exists and is not a directory"), (a_file / "sub", "is a file, not a directory"),
                            (messy_inputs, "exists and is not empty")):
        with pytest.raises(UserError, match=message):
            prepare([str(messy_inputs)], str(output), prep_cfg().data, 512, log=lambda _: None)
    with pytest.raises(TokenizerError, match="does not exist"):  # a named tokenizer is checked up front too
        prepare([str(messy_inputs)], str(tmp_path / "o"), prep_cfg().data, 512, tokenizer=str(tmp_path / "no.model"),
                log=lambda _: None)
    assert time.perf_counter() - started < 5
    proc = run_cli("data", "prepare", "--input", messy_inputs, "--output", a_file / "sub")
    assert proc.returncode == 2 and "is a file, not a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_a_long_single_line_document_trains_a_tokenizer(small_corpus, tmp_path):
    """sentencepiece skips lines longer than max_sentence_length: a one-line document used to leave it nothing."""
    import random
    words = open(os.path.join(small_corpus, sorted(os.listdir(small_corpus))[0])).read().split()
    rng = random.Random(0)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a_long.txt").write_text(" ".join(rng.choice(words) for _ in range(600_000)))  # ~3 MB
    (tmp_path / "in" / "b_short.txt").write_text("a short second document for validation " * 3)
    cfg = prep_cfg(val_fraction=0.01)
    manifest = prepare([str(tmp_path / "in")], str(tmp_path / "out"), cfg.data, 512, log=lambda _: None)
    assert manifest["tokenizer"]["vocab_size"] == 512 and manifest["counts"]["documents_out"] == 2
    tok = load_tokenizer(str(tmp_path / "out"))
    assert len(tok.encode(words[0])) <= 3  # trained on the long document's words, not just bytes


def test_damaged_manifests_and_shards_are_one_clear_error(messy_inputs, tmp_path):
    out = tmp_path / "out"
    prepare([str(messy_inputs)], str(out), prep_cfg().data, 512, log=lambda _: None)
    manifest_path = out / "manifest.json"
    good = manifest_path.read_text()
    manifest_path.write_text(good[: len(good) // 2])
    with pytest.raises(PreparedDataError, match=r"manifest\.json is not valid JSON"):
        PreparedSplit(str(out), "train")
    damaged = json.loads(good)
    del damaged["splits"]["val"]
    manifest_path.write_text(json.dumps(damaged))
    with pytest.raises(PreparedDataError, match="no valid val split"):
        PreparedSplit(str(out), "train")
    manifest_path.write_text(good)
    (out / "train" / "shard-00001.docs.npy").write_bytes(b"")
    with pytest.raises(PreparedDataError, match=r"shard-00001\.docs\.npy: unreadable document offsets"):
        PreparedSplit(str(out), "train")
    np.save(out / "train" / "shard-00001.docs.npy", np.zeros(3, np.float32))
    with pytest.raises(PreparedDataError, match="expected a 1-D integer array"):
        PreparedSplit(str(out), "train")
