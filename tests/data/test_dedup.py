import random

import numpy as np

from llm_jax.data.dedup import MinHashLSH, exact_duplicates, jaccard, normalise


def test_exact_duplicates_ignore_case_and_spacing():
    docs = ["Hello  World", "hello world\n", "hello there", "HELLO WORLD"]
    assert normalise(docs[0]) == "hello world"
    assert exact_duplicates(docs).tolist() == [False, True, False, True]


def test_minhash_estimates_jaccard():
    rng = random.Random(0)
    words = [f"w{rng.randrange(5000)}" for _ in range(400)]
    a = " ".join(words)
    b = " ".join(words[:300] + [f"x{i}" for i in range(100)])
    sigs = MinHashLSH(bands=32, rows=8).signatures([a, b])
    estimate = np.mean(sigs[0] == sigs[1])
    assert abs(estimate - jaccard(a, b)) < 0.08


def test_planted_near_duplicates_are_found_without_false_positives():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(50_000)]
    originals = [" ".join(rng.choice(vocab) for _ in range(rng.randint(200, 400))) for _ in range(1500)]
    planted = []
    for i, doc in enumerate(rng.sample(originals, 300)):  # re-posts: two words changed, a footer added
        words = doc.split()
        for _ in range(2):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        copy = " ".join(words) + f" shared on {i} sites"
        assert jaccard(doc, copy) >= 0.85  # what "near-duplicate" means here
        planted.append(copy)
    docs = originals + planted
    dup = MinHashLSH().duplicates(docs)  # default threshold 0.8
    recall = dup[len(originals):].mean()
    assert recall >= 0.95, recall
    print(f"planted near-duplicates found: {recall:.3f}")
    assert not dup[:len(originals)].any()  # no distinct original is removed
