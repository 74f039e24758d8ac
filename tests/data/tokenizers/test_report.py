import json

from helpers import run_cli


def test_report_lists_every_kind_side_by_side(small_corpus):
    proc = run_cli("tokenizer", "report", "--corpus", small_corpus, "--vocab-size", "512", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = report["tokenizers"]
    assert set(rows) == {"bytelevel_bpe", "sentencepiece_bpe", "sentencepiece_unigram", "wordpiece", "char", "word",
                         "tokenizers_bpe"}
    assert rows["char"]["chars_per_token"] == 1.0
    assert rows["bytelevel_bpe"]["lossless"] and rows["bytelevel_bpe"]["chars_per_token"] > 1.5
    assert abs(rows["bytelevel_bpe"]["tokens"] / rows["tokenizers_bpe"]["tokens"] - 1) < 0.02
    table = run_cli("tokenizer", "report", "--corpus", small_corpus, "--vocab-size", "512", "--kinds", "char,word")
    assert "chars/token" in table.stdout and "word" in table.stdout


def test_train_command(small_corpus, tmp_path):
    proc = run_cli("tokenizer", "train", "--corpus", small_corpus, "--kind", "bytelevel_bpe", "--vocab-size", "400",
                   "--out", tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["vocab_size"] == 400
    assert (tmp_path / "tokenizer.llm_jax.json").is_file()
    bad = run_cli("tokenizer", "train", "--corpus", small_corpus, "--kind", "morse", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "unknown tokenizer kind 'morse'" in bad.stderr
