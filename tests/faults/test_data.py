"""`llm-jax data prepare` on hostile inputs and impossible outputs, through the real command."""

import json
import os

import pytest
from faultlib import cli, one_clear_line
from helpers import write_hostile_inputs

from llm_jax.errors import EXIT_USAGE

SMALL = ["--config.model.vocab_size=512", "--config.data.dedup.near=false", "--config.data.workers=1"]


@pytest.mark.fault(fault="`data prepare` over a lone-surrogate JSON row, deep nesting, truncated / corrupt / "
                         "fake `.gz` files, a dangling link, a FIFO, random bytes, a PNG, an ELF, Latin-1 text",
                   outcome="exit 0; each counted in the report (repaired, skipped or kept), the good text prepared")
def test_hostile_inputs_are_counted_not_fatal(small_corpus, tmp_path, observe):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_hostile_inputs(inputs)
    proc = cli("data", "prepare", "--input", inputs, small_corpus, "--output", tmp_path / "out", "--json", *SMALL)
    observe(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])["input"]
    assert {k: counts[k] for k in ("invalid_unicode_documents", "non_utf8_documents", "bad_json_lines",
                                   "corrupt_archives", "unreadable_files", "binary_files")} == {
        "invalid_unicode_documents": 1, "non_utf8_documents": 1, "bad_json_lines": 2, "corrupt_archives": 3,
        "unreadable_files": 2, "binary_files": 3}
    assert os.path.isfile(tmp_path / "out" / "manifest.json")


@pytest.mark.fault(fault="`data prepare --output` that is a file, is under a file, or a non-empty directory",
                   outcome="exit 2 before any input is read, one line naming the path")
@pytest.mark.parametrize("where", ["a file", "under a file", "a non-empty directory"])
def test_output_problems_fail_before_any_work(small_corpus, tmp_path, observe, where):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    output = {"a file": tmp_path / "afile", "under a file": tmp_path / "afile" / "out",
              "a non-empty directory": tmp_path / "full"}[where]
    proc = cli("data", "prepare", "--input", small_corpus, "--output", output, *SMALL, timeout=60)
    observe(proc)
    one_clear_line(proc, EXIT_USAGE, "--output")
    assert (tmp_path / "afile").read_text() == "x" and (tmp_path / "full" / "keep.txt").read_text() == "precious"
    assert "data: read" not in proc.stdout  # refused before reading


@pytest.mark.fault(fault="one 3 MB single-line document among the inputs",
                   outcome="the tokenizer trains on bounded pieces; exit 0")
def test_a_long_single_line_document_prepares(small_corpus, tmp_path, observe):
    long_doc = tmp_path / "long"
    long_doc.mkdir()
    words = open(os.path.join(small_corpus, sorted(os.listdir(small_corpus))[0])).read().split()
    (long_doc / "one_line.txt").write_text(" ".join(words * (3_000_000 // sum(map(len, words)) + 1))[:3_000_000])
    proc = cli("data", "prepare", "--input", long_doc, small_corpus, "--output", tmp_path / "out", "--json", *SMALL)
    observe(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
