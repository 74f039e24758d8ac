"""The bounded text trainers see, cutting long documents where encodings do not change, and trainer / file
failures as clear TokenizerErrors."""

import collections
import random

import pytest
import regex
import sentencepiece as spm

from llm_jax.data.corpus import shakespeare_scenes
from llm_jax.data.tokenizers import TokenizerError, load_tokenizer, train_sentencepiece, train_tokenizer
from llm_jax.data.tokenizers.base import bounded_pieces, training_text
from llm_jax.data.tokenizers.bpe import GPT2_PATTERN

ALPHABET = list("ab cd\n\t.,'s") + ["\u00a0", "  ", "\n\n", "'ll", "12", "é", "中", "   ", "\x1c", "!"]


def random_texts(n, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 300))) for _ in range(n)]


def test_bounded_pieces_rebuild_the_text_and_keep_gpt2_chunks():
    gpt2 = regex.compile(GPT2_PATTERN)
    for text in random_texts(300) + shakespeare_scenes()[:5]:
        for n in (1, 7, 50):
            pieces = list(bounded_pieces(text, n))
            assert "".join(pieces) == text and all(0 < len(p) <= n for p in pieces)
            # where every window holds a space before a word, the chunks a BPE trainer counts do not change
            if all(regex.search(r"\s\S", text[i + 1:i + n + 2]) for i in range(max(1, len(text) - n))):
                assert collections.Counter(gpt2.findall(text)) == collections.Counter(
                    c for p in pieces for c in gpt2.findall(p))
    assert list(bounded_pieces("x" * 10, 4)) == ["xxxx", "xxxx", "xx"]  # no whitespace: hard cuts
    assert list(bounded_pieces("ab cd\nef gh", 6, end=10)) == ["ab cd", "\nef g"]  # newline first; `end` respected


def test_training_text_is_everything_in_order_under_the_budget_else_a_sample_up_to_it():
    docs = [f"document {i} " * 20 for i in range(50)]
    assert "".join(training_text(docs, budget_chars=10**6, piece_chars=30)) == "".join(docs)
    sample = list(training_text(docs, budget_chars=1000, piece_chars=30))
    assert sum(map(len, sample)) == 1000 and max(map(len, sample)) <= 30
    assert sample == list(training_text(docs, budget_chars=1000, piece_chars=30))  # seeded
    assert not "".join(sample).startswith("".join(docs[:3]))  # a sample, not the first documents


def test_every_trainer_learns_from_one_long_line(tmp_path):
    words = " ".join(shakespeare_scenes()[:20]).split()
    rng = random.Random(0)
    line = " ".join(rng.choice(words) for _ in range(200_000))  # ~1 MB, no newline
    for kind in ("sentencepiece_bpe", "sentencepiece_unigram", "bytelevel_bpe", "wordpiece"):
        tok = train_tokenizer(kind, [line], 600, str(tmp_path / kind))
        ids = tok.encode(line[:10_000])
        assert tok.vocab_size <= 600 and len(ids) < 10_000 / 1.3 and tok.unk_id not in ids, kind  # it learned


def test_long_documents_encode_in_pieces_exactly(tmp_path):
    cases = [(text, n) for text in random_texts(60, seed=1) for n in (1, 10, 100)]
    cases += [(scene, 200) for scene in shakespeare_scenes()[:3]]
    for kind in ("sentencepiece_bpe", "sentencepiece_unigram", "bytelevel_bpe", "wordpiece", "char", "word"):
        tok = train_tokenizer(kind, shakespeare_scenes()[:15], 400, str(tmp_path / kind))
        assert tok.cut is not None, kind
        for text, n in cases:
            assert [i for ids in tok.encode_long(text, n) for i in ids] == tok.encode(text), (kind, text, n)
    # a model that adds a dummy prefix or normalises (Llama-style) is encoded in one piece
    (tmp_path / "corpus.txt").write_text("\n".join(shakespeare_scenes()[:40]))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "llama"),
                                   vocab_size=300, model_type="bpe", minloglevel=2)
    llama = load_tokenizer(str(tmp_path / "llama.model"))
    assert llama.cut is None and list(llama.encode_long("a b " * 100, 10)) == [llama.encode("a b " * 100)]


def test_trainer_and_file_failures_explain_themselves(tmp_path):
    with pytest.raises(TokenizerError, match="sentencepiece found no usable training text"):
        train_sentencepiece([" \n\t", ""], 300, str(tmp_path / "tokenizer.model"))
    tok = train_tokenizer("wordpiece", shakespeare_scenes()[:5], 200, str(tmp_path / "wp"))
    path = tmp_path / "wp" / "tokenizer.llm_jax.json"
    good = path.read_text()
    path.write_text(good[: len(good) // 2])
    with pytest.raises(TokenizerError, match=r"tokenizer file .*tokenizer\.llm_jax\.json is not valid JSON"):
        load_tokenizer(str(tmp_path / "wp"))
    path.write_text(good.replace('"vocab"', '"vocabulary"'))
    with pytest.raises(TokenizerError, match="is not a valid wordpiece tokenizer: no 'vocab' field"):
        load_tokenizer(str(path))
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "vocab.json").write_text('{"a": 0}')
    (tmp_path / "gpt2" / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(TokenizerError, match=r"merges\.txt, line 2: not a merge"):
        load_tokenizer(str(tmp_path / "gpt2"))
    assert tok.vocab_size <= 200
