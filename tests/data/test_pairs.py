"""(input, target) pairs for the seq2seq objective: reading (bad lines counted), the split, the fixed-length
rows, the config's checks, and a run of `llm-jax train` on a pairs file."""

import json

import numpy as np
import pytest

from helpers import run_cli
from llm_jax import config as config_lib
from llm_jax.data.corpus import CorpusError
from llm_jax.data.pairs import PairRows, parse_pairs, split_pairs
from llm_jax.errors import UserError


def test_bad_lines_are_counted_and_both_field_layouts_are_read():
    raw = "\n".join([json.dumps({"input": "a b", "target": "b a"}),
                     json.dumps({"prompt": "c d", "completion": "d c"}),
                     "{not json", json.dumps(["a", "list"]),
                     json.dumps({"input": "no target"}), json.dumps({"input": "x", "target": 3}),
                     json.dumps({"input": " ", "target": "blank input"}), ""]).encode()
    pairs, counts = parse_pairs(raw, "p.jsonl")
    assert pairs == [("a b", "b a"), ("c d", "d c")]
    assert counts == {"lines": 7, "not_json": 2, "missing_fields": 3}


def test_a_file_without_a_usable_pair_is_one_error_naming_it():
    with pytest.raises(CorpusError, match=r"data.pairs=bad.jsonl: no usable pair in 2 line\(s\) \(1 not JSON"):
        parse_pairs(b'oops\n{"text": "not a pair"}\n', "bad.jsonl")


def test_the_split_is_by_content_and_keeps_identical_pairs_once():
    pairs = [(f"in {i}", f"out {i}") for i in range(400)]
    train, val = split_pairs(pairs + pairs[:50], 0.1)
    assert sorted(train + val) == sorted(pairs)
    assert 20 <= len(val) <= 60  # ~10% of 400
    assert split_pairs(list(reversed(pairs)), 0.1)[1] == list(reversed(val))  # membership by content, not order


def test_rows_pad_the_input_end_the_target_with_eos_and_count_cuts():
    rows = PairRows([([5, 6, 7], [8, 9]), ([1, 2, 3, 4, 5, 6], [7, 7, 7, 7])], source_len=4, target_len=4,
                    pad_id=0, eos_id=2)
    first = rows[0]
    np.testing.assert_array_equal(first["encoder_inputs"], [5, 6, 7, 0])
    np.testing.assert_array_equal(first["encoder_padding"], [1, 1, 1, 0])
    np.testing.assert_array_equal(first["decoder_targets"], [8, 9, 2, 0])
    np.testing.assert_array_equal(first["weights"], [1, 1, 1, 0])
    second = rows[1]
    np.testing.assert_array_equal(second["encoder_inputs"], [1, 2, 3, 4])
    np.testing.assert_array_equal(second["decoder_targets"], [7, 7, 7, 7])  # cut: the EOS did not fit
    assert (rows.truncated_inputs, rows.truncated_targets) == (1, 1)


@pytest.mark.parametrize("objective, pairs, message", [
    ("seq2seq", "", "the seq2seq objective trains on"),
    ("causal_lm", "p.jsonl", "set both or neither"),
])
def test_seq2seq_and_data_pairs_go_together(objective, pairs, message):
    cfg = config_lib.default_config()
    cfg.model.update(family="encdec" if objective == "seq2seq" else "decoder", positions="relative" if
                     objective == "seq2seq" else "learned")
    cfg.train.objective, cfg.data.pairs = objective, pairs
    with pytest.raises(UserError, match=message):
        config_lib.validate(config_lib.resolve(cfg))


def test_llm_jax_train_runs_seq2seq_on_a_pairs_file(tmp_path):
    rng = np.random.RandomState(0)
    words = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op"]
    with open(tmp_path / "pairs.jsonl", "w") as f:
        for _ in range(300):
            line = [words[i] for i in rng.randint(0, len(words), rng.randint(2, 6))]
            f.write(json.dumps({"input": " ".join(line), "target": " ".join(reversed(line))}) + "\n")
        f.write("not a pair\n")
    settings = {"model.family": "encdec", "model.positions": "relative", "model.d_model": 32, "model.n_layers": 1,
                "model.n_heads": 2, "model.vocab_size": 64, "model.seq_len": 24, "data.tokenizer_kind": "char",
                "data.pairs": tmp_path / "pairs.jsonl", "data.target_len": 24, "data.cache_dir": tmp_path / "cache",
                "train.objective": "seq2seq", "train.steps": 4, "train.warmup_steps": 1, "train.eval_every": 4,
                "train.eval_batches": 1, "train.batch_size": 8, "checkpoint.every": 4}
    out = run_cli("train", "--workdir", tmp_path / "run", *(f"--config.{k}={v}" for k, v in settings.items()))
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stdout + out.stderr
    assert "(1 bad line(s) skipped)" in log
    assert "token_accuracy" in log and "sequence_accuracy" in log
    assert (tmp_path / "run" / "config.json").exists()
