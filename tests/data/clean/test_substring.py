import numpy as np
import pytest

from llm_jax.data.clean.substring import (SubstringDedup, remove_repeats, repeat_mask, shard_of, spans,
                                          window_hashes)


def words(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_window_hashes_are_stable_and_position_free():
    toks = words("w", 80)
    h = window_hashes(toks, 50)
    assert h.dtype == np.uint64 and len(h) == 31
    assert np.array_equal(h, window_hashes(list(toks), 50))
    assert window_hashes(["x", "y"] + toks, 50)[2] == h[0]  # the same window at another offset
    assert len(set(h.tolist())) == 31
    assert len(window_hashes(toks[:49], 50)) == 0
    assert window_hashes(["a", "b", "c"], 2)[0] != window_hashes(["b", "a", "c"], 2)[0]
    with pytest.raises(ValueError):
        window_hashes(toks, 0)


def test_repeated_paragraph_is_removed_from_the_later_document_only():
    paragraph = words("p", 60)
    first = words("a", 30) + paragraph + words("b", 20)
    second = words("c", 25) + paragraph + words("d", 40)
    dedup = SubstringDedup(n=50)
    kept1, removed1 = dedup.process(first)
    kept2, removed2 = dedup.process(second)
    assert kept1 == first and removed1 == 0
    assert kept2 == words("c", 25) + words("d", 40) and removed2 == 60
    assert dedup.stats() == {"documents": 2, "removed_tokens": 60, "removed_spans": 1,
                             "seen_windows": 61 + 76 - 11}


def test_no_repeat_and_short_repeat_are_kept():
    dedup = SubstringDedup(n=50)
    assert dedup.process(words("a", 100)) == (words("a", 100), 0)
    assert dedup.process(words("b", 100)) == (words("b", 100), 0)
    short = words("a", 49)  # 49 words of the first document: below n
    later = words("z", 10) + short + words("y", 10)
    assert dedup.process(later) == (later, 0)
    assert dedup.process([]) == ([], 0)


def test_repeat_within_the_same_document_is_kept_and_text_api():
    dedup = SubstringDedup(n=5)
    text = " ".join(words("r", 10) * 2)
    assert dedup.process_text(text) == (text, 0)
    out, removed = dedup.process_text("new words here " + " ".join(words("r", 10)))
    assert out == "new words here " and removed == 10  # the whitespace around a cut stays


def test_two_pass_api_with_a_set_or_a_sharded_lookup():
    n, docs = 8, [words("a", 30), words("b", 5) + words("a", 12)[2:] + words("c", 9), words("c", 20)]
    one = SubstringDedup(n)
    expected = [one.process(d) for d in docs]
    # pass 1: the earliest document of every window hash, kept per shard; pass 2: remove what an earlier one had
    shards = 4
    first = [dict() for _ in range(shards)]
    hashes = [window_hashes(d, n) for d in docs]
    for pos, h in enumerate(hashes):
        for value, shard in zip(h.tolist(), shard_of(h, shards).tolist()):
            first[shard].setdefault(value, pos)
    for pos, (doc, h) in enumerate(zip(docs, hashes)):
        def seen(hs, pos=pos):
            return np.array([first[s].get(v, pos) < pos for v, s in zip(hs.tolist(), shard_of(hs, shards).tolist())])
        assert remove_repeats(doc, seen, n, hashes=h) == expected[pos]
    earlier = set(hashes[0].tolist())
    assert remove_repeats(docs[1], earlier, n) == expected[1] and expected[1][1] == 10


def test_masks_and_spans():
    mask = repeat_mask(10, np.array([False, True, False, False, False, False, True]), 3)
    assert mask.tolist() == [False, True, True, True, False, False, True, True, True, False]
    assert spans(mask) == [(1, 4), (6, 9)]
    assert spans(np.zeros(3, bool)) == []
