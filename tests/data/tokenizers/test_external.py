import random

import pytest

from llm_jax.data.corpus import shakespeare_scenes
from llm_jax.data.tokenizers import TokenizerError, load_tokenizer, train_sentencepiece


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    return train_sentencepiece(shakespeare_scenes()[:30], 512, str(path))


def test_sentencepiece_round_trips_any_text_exactly(sp):
    rng = random.Random(0)
    samples = ["ROMEO:\nBut soft!  what light\tthrough yonder window breaks?\n\n\n", "  leading and trailing  ",
               "naïve café — 中文 😀 \x00\x7f", ""]
    alphabet = [chr(c) for c in list(range(32, 127)) + [10, 9, 233, 8212, 0x4E2D, 0x1F600]]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(200)]
    for text in samples:
        assert sp.decode(sp.encode(text)) == text


def test_special_ids_and_vocab(sp):
    assert sp.vocab_size == 512
    assert (sp.bos_id, sp.eos_id) == (1, 2)
    assert sp.encode("\n") == [sp._sp.piece_to_id("\n")]  # a newline is one token


def test_load_from_file_or_directory(sp, tmp_path):
    sp.save(str(tmp_path))
    assert load_tokenizer(str(tmp_path)).encode("hello there") == sp.encode("hello there")
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(str(tmp_path / "nope.model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="holds no tokenizer"):
        load_tokenizer(str(tmp_path / "empty"))
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="cannot load tokenizer"):
        load_tokenizer(str(bad))


def test_hf_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(shakespeare_scenes()[:5], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    hf = load_tokenizer(str(tmp_path))
    assert hf.eos_id == hf.bos_id == 0 and hf.vocab_size == 400
    text = "To be, or not to be: that is the question.\n"
    assert hf.decode(hf.encode(text)) == text
    texts = shakespeare_scenes()[5:9] + ["", "naïve café 😀"]
    assert hf.encode_batch(texts, threads=1) == hf.encode_batch(texts) == [hf.encode(t) for t in texts]


def test_one_thread_encodes_like_all_threads(sp):
    """The Beam workers encode on one thread (each worker is a core): the ids must not depend on it."""
    texts = shakespeare_scenes()[30:40] + ["", "  x  "]
    assert sp.encode_batch(texts, threads=1) == sp.encode_batch(texts) == [sp.encode(t) for t in texts]


def test_the_same_text_trains_the_same_file_wherever_it_is_trained(sp, tmp_path):
    """The trainer records its temporary paths and thread count in the model; they are dropped, so a preparation's
    manifest (which hashes the tokenizer) does not depend on where or on how many cores it ran."""
    again = train_sentencepiece(shakespeare_scenes()[:30], 512, str(tmp_path / "sp.model"))
    first = open(sp.path, "rb").read()
    assert open(again.path, "rb").read() == first
    assert b"/tmp" not in first and b"corpus.txt" not in first
    assert again.encode("To be, or not to be") == sp.encode("To be, or not to be")
