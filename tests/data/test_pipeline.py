import os

import numpy as np
import pytest
from ml_collections import ConfigDict

from llm_jax.data.corpus import CorpusError
from llm_jax.data.pipeline import check_length, prepare, unigram_entropy


def data_cfg(corpus, **kw):
    return ConfigDict(dict(dict(corpus=corpus, tokenizer="", tokenizer_model="bpe", val_fraction=0.1, cache_dir=""),
                           **kw))


def test_prepare_trains_a_tokenizer_splits_and_caches(small_corpus):
    logs = []
    data = prepare(data_cfg(small_corpus), 512, log=logs.append)
    assert data.tokenizer.vocab_size == 512
    assert data.train_tokens.size > 30_000 and data.val_tokens.size > 1_000
    assert data.train_tokens.max() < 512
    eos = data.tokenizer.eos_id
    assert (data.train_tokens == eos).sum() == data.stats["documents"]["train"]  # one EOS after each document
    assert any("training a 512-piece" in line for line in logs)
    again = prepare(data_cfg(small_corpus), 512, log=logs.append)
    assert "cached tokens" in logs[-1]
    np.testing.assert_array_equal(again.train_tokens, data.train_tokens)
    other = prepare(data_cfg(small_corpus), 384, log=logs.append)  # another vocabulary: not the cached one
    assert other.tokenizer.vocab_size == 384


def test_existing_tokenizer_and_vocab_check(small_corpus, tmp_path):
    data = prepare(data_cfg(small_corpus), 512, log=lambda _: None)
    path = data.tokenizer.save(str(tmp_path))
    reused = prepare(data_cfg(small_corpus, tokenizer=path), 600, log=lambda _: None)
    np.testing.assert_array_equal(reused.train_tokens, data.train_tokens)
    with pytest.raises(CorpusError, match="set model.vocab_size >= 512"):
        prepare(data_cfg(small_corpus, tokenizer=path), 300, log=lambda _: None)


def test_unigram_entropy():
    assert unigram_entropy(np.array([0, 1, 2, 3]), 8) == pytest.approx(np.log(4))
    assert unigram_entropy(np.array([5, 5, 5]), 8) == pytest.approx(0.0)


def test_too_short_splits_are_reported():
    with pytest.raises(CorpusError, match="fewer than one sequence"):
        check_length(np.arange(10), 16, 1, "validation")
    with pytest.raises(CorpusError, match="fewer than train.batch_size=8"):
        check_length(np.arange(50), 16, 8, "train")
