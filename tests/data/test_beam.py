"""`llm-jax data prepare --engine beam`: the Apache Beam pipelines against the one-process path they must agree with,
byte-identical output for 1, 2 and 4 workers, resume after a kill, bad input counted, each shuffle's decision on
hand-made partitions, and the ArrayRecord shards read by the training loader."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO, prepared_documents, write_hostile_inputs
from llm_jax import config as config_lib
from llm_jax.data.beam import keys, stages
from llm_jax.data.beam.units import Unit, plan_units, read_unit
from llm_jax.data.clean.substring import mix
from llm_jax.data.prepare import prepare
from llm_jax.data.shards import PreparedSplit
from llm_jax.data.sources import InputStats, read_documents

pytest.importorskip("apache_beam", reason="the `beam` extra (apache-beam) is not installed")
from llm_jax.data.beam.pipeline import BeamSettings, output_shards, plan, prepare as beam_prepare  # noqa: E402

QUIET = dict(log=lambda _: None)
SEQ_LEN = config_lib.load_config(None, {}).model.seq_len  # what the command line passes
PII = "Write to jane.doe@example.com or call (202) 555-0143 about the tickets. "
GERMAN = "Der alte Fährmann ruderte jeden Morgen die Reisenden über den Fluss, und am Abend flickte er seine Netze."


def fullwidth(text: str) -> str:
    """ASCII letters, digits and punctuation as their full-width forms (NFKC folds them back)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


SETTINGS = {"data.shards": "3", "data.val_fraction": "0.2", "data.filter.min_words": "5",
            "data.clean.normalize": "NFKC", "data.clean.languages": "en", "data.clean.redact_pii": "true",
            "data.clean.substring_ngram": "12"}


def data_cfg(**sets):
    overrides = dict(SETTINGS)
    overrides.update({k: str(v) for k, v in sets.items()})
    return config_lib.load_config(None, overrides).data


@pytest.fixture(scope="module")
def corpus(small_corpus, tmp_path_factory):
    """Scenes as JSONL (planted: exact copies, near copies, a German document, PII, a repeated paragraph, junk
    too short to keep) plus every kind of hostile input."""
    d = tmp_path_factory.mktemp("beam_corpus")
    scenes = [open(os.path.join(small_corpus, f), encoding="utf-8").read() for f in sorted(os.listdir(small_corpus))]
    paragraph = " ".join(scenes[3].split()[:40])
    docs = list(scenes[:24])
    docs += [scenes[2], scenes[5].upper(), fullwidth(scenes[13])]          # exact copies (case, width differ)
    docs += [scenes[7].replace("the", "thy", 3), scenes[9] + " Exeunt."]     # near copies
    docs += [GERMAN, PII + scenes[11][:300], "too short", "Later, again: " + paragraph + " and then more words."]
    rows = "".join(json.dumps({"text": t}) + "\n" for t in docs)
    (d / "scenes.jsonl").write_text(rows, encoding="utf-8")
    hostile = d / "hostile"
    hostile.mkdir()
    write_hostile_inputs(hostile)
    return [str(d / "scenes.jsonl"), str(hostile)]


@pytest.fixture(scope="module")
def tokenizer(small_corpus, tmp_path_factory):
    from llm_jax.data.corpus import load_documents
    from llm_jax.data.tokenizers import train_tokenizer
    out = tmp_path_factory.mktemp("beam_tok")
    train_tokenizer("bytelevel_bpe", load_documents(small_corpus), 400, str(out))
    return str(out)


def tree_digest(path) -> dict:
    return {os.path.relpath(os.path.join(root, f), path): hashlib.sha256(open(os.path.join(root, f), "rb").read())
            .hexdigest() for root, _, files in os.walk(path) for f in files}




@pytest.fixture(scope="module")
def beam_outputs(corpus, tokenizer, tmp_path_factory):
    """The same preparation with 1, 2 and 4 DirectRunner workers (small units: the JSONL file is cut in pieces)."""
    base = tmp_path_factory.mktemp("beam_out")
    outs = {}
    for workers in (1, 2, 4):
        outs[workers] = base / f"w{workers}"
        beam_prepare(corpus, str(outs[workers]), data_cfg(), 400, BeamSettings(workers=workers, unit_mb=0.05),
                     SEQ_LEN, tokenizer=tokenizer, **QUIET)
    return outs


def test_the_same_documents_survive_as_in_the_one_process_path(beam_outputs, corpus, tokenizer, tmp_path):
    memory = tmp_path / "memory"
    expected = prepare(corpus, str(memory), data_cfg(), 400, SEQ_LEN, tokenizer=tokenizer, **QUIET)
    manifest = json.loads((beam_outputs[1] / "manifest.json").read_text())
    assert prepared_documents(beam_outputs[1]) == prepared_documents(memory)
    got, want = manifest["counts"], expected["counts"]
    for key in ("documents_in", "input", "exact_duplicates_removed", "near_duplicates_removed", "filtered",
                "filtered_by_reason", "clean", "documents_out", "tokens_out", "long_documents"):
        assert got[key] == want[key], key
    assert want["exact_duplicates_removed"] == 3 and want["near_duplicates_removed"] == 2
    assert want["input"]["normalized_documents"] >= 1  # the full-width copy (and any ligature in the scenes)
    assert want["clean"]["languages"]["de"] == 1 and want["clean"]["pii_redacted"]["email"] == 1
    assert want["clean"]["substring_removed_spans"] >= 1 and want["filtered_by_reason"]["too_few_words"] >= 1
    assert manifest["sources"] == expected["sources"]
    assert manifest["pipeline"]["units"] > 3  # the JSONL file was read as several units


def test_outputs_are_byte_identical_for_1_2_and_4_workers(beam_outputs):
    one = tree_digest(beam_outputs[1])
    assert any(f.endswith(".array_record") for f in one) and any(f.endswith(".tokens.npy") for f in one)
    assert tree_digest(beam_outputs[2]) == one
    assert tree_digest(beam_outputs[4]) == one


def test_the_loader_reads_the_array_record_shards_as_it_reads_the_numpy_ones(beam_outputs):
    from llm_jax.data.loader import PackedWindows
    a = PackedWindows.from_split(PreparedSplit(str(beam_outputs[1]), "train", read_format="array_record"), 16)
    b = PackedWindows.from_split(PreparedSplit(str(beam_outputs[1]), "train", read_format="numpy"), 16)
    assert len(a) == len(b) > 100
    for i in range(0, len(a), 7):
        np.testing.assert_array_equal(a[i]["tokens"], b[i]["tokens"])
        np.testing.assert_array_equal(a[i]["segments"], b[i]["segments"])


def test_training_reads_the_array_record_shards_as_it_reads_the_numpy_ones(beam_outputs, tmp_path):
    from helpers import small_config
    from llm_jax.train.loop import train
    losses = {}
    for fmt in ("numpy", "array_record"):
        cfg = small_config(vocab_size=400)
        cfg.data.prepared, cfg.data.read_format = str(beam_outputs[1]), fmt
        cfg.train.update(steps=6, eval_every=0, log_every=1)
        cfg.checkpoint.every = 0
        train(cfg, str(tmp_path / fmt), **QUIET)
        rows = [json.loads(line) for line in (tmp_path / fmt / "metrics.jsonl").read_text().splitlines()]
        losses[fmt] = [r["loss"] for r in rows if "loss" in r]
    assert len(losses["numpy"]) == 6 and losses["numpy"] == losses["array_record"]


def test_a_killed_run_resumes_without_redoing_finished_units(corpus, tokenizer, beam_outputs, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "llm_jax", "data", "prepare", "--engine", "beam", "--workers", "1",
           "--unit-mb", "0.05", "--input", *corpus, "--output", str(out), "--tokenizer", tokenizer,
           *[f"--config.{k}={v}" for k, v in SETTINGS.items()]]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    units = tmp_path / "out.work" / "units"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(units.glob("*.json"))) < 2:  # killed while reading units
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and list(units.glob("*.json")), "the run was not killed mid-way"
    done = len(list(units.glob("*.json")))
    resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming: {done} of " in resumed.stdout  # the units read before the kill are not read again
    assert tree_digest(out) == tree_digest(beam_outputs[1])
    assert not (tmp_path / "out.work").exists()


def test_other_settings_do_not_reuse_an_interrupted_work_directory(corpus, tokenizer, tmp_path):
    from llm_jax.errors import UserError
    from llm_jax.data.beam.pipeline import _open_work, _settings_fingerprint
    settings = BeamSettings(unit_mb=0.05)
    _open_work(str(tmp_path / "w"), _settings_fingerprint(corpus, data_cfg(), tokenizer, settings), print)
    with pytest.raises(UserError, match="other inputs or settings"):
        _open_work(str(tmp_path / "w"), _settings_fingerprint(corpus, data_cfg(**{"data.shards": 5}), tokenizer,
                                                              settings), print)


def test_units_cut_a_jsonl_file_into_ranges_that_read_every_line_once(tmp_path):
    rows = [json.dumps({"text": f"document number {i} " + "x" * (i % 37)}) for i in range(500)]
    rows[100] = "{not json"
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(rows) + "\n")
    cfg = data_cfg()
    whole_stats = InputStats()
    whole = list(read_documents([str(path)], whole_stats))
    for unit_bytes in (1000, 4096, 10**9):
        units = plan_units([str(path)], cfg, unit_bytes)
        stats, docs = InputStats(), []
        for unit in units:
            docs += list(read_unit(unit, cfg, stats))
        assert docs == whole and stats == whole_stats
        assert len(units) == (1 if unit_bytes == 10**9 else -(-path.stat().st_size // unit_bytes))


def test_the_plan_is_printed_without_running(corpus):
    info = plan(corpus, data_cfg(), BeamSettings(runner="DataflowRunner", unit_mb=0.05,
                                                 options=("--project=p", "--region=us-central1")))
    assert info["units"] > 3 and info["partitions"] >= 4
    assert info["pipeline_options"]["runner"] == "DataflowRunner" and info["pipeline_options"]["project"] == "p"


# ---------------------------------------------------------------------------- each shuffle's decision by hand


def test_exact_keys_keep_the_earliest_copy_of_each_key():
    rows = np.array([[1, 2, 30], [1, 2, 10], [5, 5, 11], [1, 2, 20], [1, 3, 12]], np.uint64)
    assert sorted(keys.later_copies(rows).tolist()) == [20, 30]


def test_output_shards_grow_with_the_input():
    cfg = data_cfg()
    cfg.shards = 4
    assert output_shards(cfg, 10 << 20) == 4
    assert output_shards(cfg, 100 << 30) == 25  # one per 4 GiB of input: ~1B tokens of English
    cfg.shards = 64
    assert output_shards(cfg, 100 << 30) == 64


def test_bucket_pairs_and_signature_check():
    rows = np.array([[7, 3], [7, 1], [9, 4], [7, 2], [8, 5], [8, 6]], np.uint64)
    assert keys.bucket_pairs(rows).tolist() == [[1, 2], [1, 3], [2, 3], [5, 6]]
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4]], np.uint32)
    b = np.array([[1, 2, 3, 9], [1, 9, 9, 9]], np.uint32)
    assert keys.similar(a, b, 0.75).tolist() == [True, False]


def test_repeated_windows_are_marked_in_every_document_but_the_earliest():
    rows = np.array([[5, 2, 0], [5, 1, 3], [5, 1, 7], [6, 2, 1], [5, 3, 4]], np.uint64)  # (hash, doc, position)
    assert sorted(map(tuple, keys.first_windows(rows).tolist())) == [(2, 0), (3, 4)]


def test_union_find_roots_components_at_their_smallest_id():
    uf = keys.UnionFind()
    for a, b in ((5, 9), (9, 2), (7, 8)):
        uf.union(a, b)
    assert [uf.find(x) for x in (2, 5, 9, 7, 8)] == [2, 2, 2, 7, 7]


def test_doc_ids_split_back_into_unit_and_ordinal():
    units, ordinals = keys.split_ids(keys.doc_ids(7, 3))
    assert units.tolist() == [7, 7, 7] and ordinals.tolist() == [0, 1, 2]
    assert Unit(3, "x", "text").name == "u-000003"


def test_a_partition_reads_its_rows_of_every_unit_file_in_file_order(tmp_path):
    from llm_jax.data.beam.stages import is_saved, load_partition, save_partitioned
    rng = np.random.default_rng(0)
    files = []
    for u in range(3):
        rows = rng.integers(0, 2**63, size=(50, 2), dtype=np.uint64)
        if u == 1:
            rows = rows[:0]  # a unit with no rows
        path = str(tmp_path / f"u{u}")
        save_partitioned(path, rows, rows[:, 0], 7)
        assert is_saved(path)
        files.append((path, rows))
    for p in range(7):
        want = [rows[rows[:, 0] % 7 == p] for _, rows in files]  # stable: each file keeps its rows' order
        got = load_partition([path for path, _ in files], p, 2)
        assert got.shape[1] == 2 and np.array_equal(got, np.concatenate(want))
    assert sum(len(load_partition([path for path, _ in files], p, 2)) for p in range(7)) == 100
    assert not is_saved(str(tmp_path / "nothing"))


def test_the_scale_benchmark_reports_its_figures_on_a_small_corpus(tmp_path):
    from llm_jax.data.beam.bench import bench_scale, format_report
    cfg = config_lib.load_config(None, {"model.vocab_size": "300", "data.tokenizer_kind": "bytelevel_bpe"})
    r = bench_scale(cfg, 0.002, str(tmp_path), **QUIET)
    assert r["identical_outputs"] and set(r["runs"]) == {1, 2} and r["corpus_bytes"] >= 2_000_000
    planted = r["planted"]["exact_copies"] + r["planted"]["near_copies"]
    for run in r["runs"].values():
        found = run["exact_duplicates_removed"] + run["near_duplicates_removed"]
        assert 0.9 * planted <= found <= 1.1 * planted
        assert run["worker_peak_bytes"] > 10 * 2**20 and run["tokens_out"] > 100_000
        assert 10 * 2**20 < run["worker_peak_anon_bytes"] <= run["worker_peak_bytes"]  # anonymous: part of the whole
    assert "speed-up 1 -> 2 workers" in format_report(r)


def test_parquet_row_groups_and_array_record_ranges_are_units(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from array_record.python.array_record_module import ArrayRecordWriter
    texts = [f"row {i} of the table" for i in range(50)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "t.parquet", row_group_size=7)
    writer = ArrayRecordWriter(str(tmp_path / "r.array_record"), "group_size:1")
    records = [json.dumps({"text": t}).encode() for t in texts[:20]] + [b"plain text record", b"\xff\xfe bad",
                                                                         json.dumps({"other": 1}).encode()]
    for r in records:
        writer.write(r)
    writer.close()
    cfg = data_cfg()
    units = plan_units([str(tmp_path / "t.parquet")], cfg, 1 << 20)
    stats, docs = InputStats(), []
    for unit in units:
        docs += list(read_unit(unit, cfg, stats))
    assert len(units) == 8 and docs == texts == list(read_documents([str(tmp_path / "t.parquet")], InputStats()))
    units = plan_units([str(tmp_path / "r.array_record")], cfg, 1 << 20, unit_records=6)
    stats, docs = InputStats(), []
    for unit in units:
        docs += list(read_unit(unit, cfg, stats))
    assert len(units) == 4 and docs == texts[:20] + ["plain text record", "\ufffd\ufffd bad"]
    assert stats["missing_field"] == 1 and stats["non_utf8_documents"] == 1 and stats["files"] == 1


def _components_through_files(work, found: list[np.ndarray], partitions: int, rounds: int) -> list[int]:
    """Runs the components transform on pairs written as the verify step writes them (band partition q's pairs);
    returns the near duplicates it wrote for units 0-7."""
    import apache_beam as beam
    from llm_jax.data.beam.pipeline import _components
    for q, pairs in enumerate(found):
        edges = np.concatenate([pairs, pairs[:, ::-1]])
        stages.save_partitioned(work.part("pairs", q), edges, mix(edges[:, 0]), partitions)
    with beam.Pipeline() as p:
        _components(p | beam.Create(list(range(len(found)))), work, partitions, rounds, n_units=8)
    near = [stages.load_partition([work.part("near", q) for q in range(partitions)], u, 1) for u in range(8)]
    return sorted(np.concatenate(near)[:, 0].tolist())


def test_connected_components_finish_a_chain_longer_than_the_rounds(tmp_path):
    chain = [[i, i + 1] for i in range(10, 22)]  # 13 nodes in a path: 4 rounds of propagation do not reach the end
    pairs = np.array(chain + [[3, 7], [5, 7], [40, 41], [3, 7]], np.uint64)  # (3, 7) found in two bands
    found = [pairs[:9], pairs[9:], np.zeros((0, 2), np.uint64)]             # a band partition found none
    duplicates = _components_through_files(stages.Work(str(tmp_path)), found, partitions=3, rounds=4)
    assert duplicates == sorted(list(range(11, 23)) + [5, 7, 41])


def test_connected_components_match_a_graph_search(tmp_path):
    rng = np.random.default_rng(0)
    pairs = np.sort(rng.integers(0, 400, size=(300, 2)), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]].astype(np.uint64) + np.uint64(7 << 32)  # ids of unit 7
    neighbours: dict[int, set] = {}
    for a, b in pairs.tolist():
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    want, seen = [], set()
    for start in sorted(neighbours):  # breadth-first search from each unseen node: all but the first are duplicates
        if start in seen:
            continue
        seen.add(start)
        frontier = [start]
        while frontier:
            frontier = sorted({n for m in frontier for n in neighbours[m]} - seen)
            seen.update(frontier)
            want += frontier
    for rounds in (1, 3):  # as in the pipeline, as many band partitions as node partitions
        found = np.array_split(pairs, 4)
        assert _components_through_files(stages.Work(str(tmp_path / str(rounds))), found, 4, rounds) == sorted(want)


def test_unicode_normal_forms_fold_what_they_should_and_count_it():
    from llm_jax.data.clean.normalize import FORMS, normalize_documents
    from llm_jax.data.sources import InputStats
    assert config_lib.CHOICES["data.clean.normalize"] == FORMS
    docs = ["ﬁne ＷＯＲＤＳ²…", "cafe\u0301", "plain"]
    for form, want, changed in [("", docs, 0), ("NFC", ["ﬁne ＷＯＲＤＳ²…", "café", "plain"], 1),
                                ("NFKC", ["fine WORDS2...", "café", "plain"], 2)]:
        stats = InputStats()
        assert list(normalize_documents(docs, form, stats)) == want and stats["normalized_documents"] == changed
    with pytest.raises(ValueError, match="NFD"):
        list(normalize_documents(docs, "NFD", InputStats()))
