import pytest

from llm_jax.data.tokenizers import CharTokenizer, TokenizerError, WordPiece, WordTokenizer, load_tokenizer
from llm_jax.data.tokenizers.wordpiece import learn_wordpiece_merges


def test_merges_maximise_the_likelihood_score():
    # freq: a 5+2=7... computed by hand: words "ab" x5, "ac" x1, "bc" x3 as a ##b etc.
    words = [["a", "##b"], ["a", "##c"], ["b", "##c"]]
    freqs = [5, 1, 3]
    # unit freqs: a 6, ##b 5, ##c 4, b 3; scores: (a,##b) 5/30=0.167, (a,##c) 1/24=0.042, (b,##c) 3/12=0.25
    assert learn_wordpiece_merges([list(w) for w in words], freqs, 1) == ["bc"]
    assert learn_wordpiece_merges([list(w) for w in words], freqs, 2) == ["bc", "ab"]


def test_greedy_longest_match_first_and_unknown_words():
    tok = WordPiece(["[PAD]", "[UNK]", "[BOS]", "[EOS]", "un", "##aff", "##able", "##a", "a", "u", "##n", ","])
    assert [tok.vocab[i] for i in tok.encode("unaffable, a")] == ["un", "##aff", "##able", ",", "a"]
    assert tok.encode("xyz") == [tok.unk_id]
    assert tok.decode(tok.encode("unaffable , a")) == "unaffable, a"


def test_trained_wordpiece_round_trips_words_and_saves(tmp_path):
    docs = ["the cat sat on the mat", "the dog sat on the log", "cats and dogs"] * 20
    tok = WordPiece.train(docs, 60)
    assert tok.vocab_size <= 60  # training stops early once every word is a single piece
    assert len(tok.encode("the cat sat")) == 3
    assert tok.decode(tok.encode("the cat sat")) == "the cat sat"
    back = load_tokenizer(tok.save(str(tmp_path)))
    assert back.encode("dogs and cats") == tok.encode("dogs and cats")
    with pytest.raises(TokenizerError, match="below the"):
        WordPiece.train(docs, 10)


def test_char_and_word_baselines():
    chars = CharTokenizer.train(["hello world\n"])
    assert chars.decode(chars.encode("hold world\n")) == "hold world\n"
    assert chars.encode("z") == [chars.unk_id]
    words = WordTokenizer.train(["to be , to be , or not"], 7)  # specials + to, be, ","
    assert words.vocab_size == 7
    assert words.decode(words.encode("to be, or not")) == "to be, [UNK] [UNK]"
