import numpy as np
import pytest

from llm_jax.data.loader import BatchLoader, PackedWindows


def windows(n_tokens, seq_len, doc_len=None):
    tokens = np.arange(n_tokens, dtype=np.int32)
    starts = np.arange(0, n_tokens, doc_len, dtype=np.int64) if doc_len else np.zeros(1, np.int64)
    return PackedWindows([tokens], [starts], seq_len)


def test_windows_pair_inputs_with_next_token_targets():
    w = windows(33, 8)
    assert len(w) == 4
    np.testing.assert_array_equal(w[1]["tokens"], np.arange(8, 17))
    batch = BatchLoader([w], 2, seed=0, shuffle=False).batch(0)
    np.testing.assert_array_equal(batch["inputs"][0], np.arange(8))
    np.testing.assert_array_equal(batch["targets"][0], np.arange(1, 9))


def test_segment_ids_follow_document_boundaries_and_never_cross_them():
    w = windows(100, 10, doc_len=7)  # documents start at 0, 7, 14, ...
    item = w[2]  # tokens 20..30
    np.testing.assert_array_equal(item["tokens"], np.arange(20, 31))
    expected = np.searchsorted(np.arange(0, 100, 7), np.arange(20, 31), side="right")
    np.testing.assert_array_equal(item["segments"], expected - expected[0] + 1)
    for i in range(len(w)):  # within a segment, every token comes from one document
        seg, tok = w[i]["segments"], w[i]["tokens"]
        for s in np.unique(seg):
            assert len(set((tok[seg == s]) // 7)) == 1


def test_windows_span_shards_without_crossing_them():
    w = PackedWindows([np.arange(21), np.arange(100, 131)], [np.zeros(1, np.int64)] * 2, 10)
    assert len(w) == 2 + 3
    np.testing.assert_array_equal(w[2]["tokens"], np.arange(100, 111))


def test_batches_are_a_pure_function_of_seed_and_step():
    w = windows(10_001, 10)
    a, b = BatchLoader([w], 4, seed=7), BatchLoader([w], 4, seed=7)
    for step in (5, 0, 123, 5):  # any order, any step
        np.testing.assert_array_equal(a.batch(step)["inputs"], b.batch(step)["inputs"])
    assert not np.array_equal(a.batch(0)["inputs"], BatchLoader([w], 4, seed=8).batch(0)["inputs"])


def test_each_epoch_covers_every_window_once_in_a_new_order():
    loader = BatchLoader([windows(401, 10)], 8, seed=1)  # 40 windows of 10
    starts = lambda steps: np.concatenate([loader.batch(s)["inputs"][:, 0] for s in steps])
    epoch0, epoch1 = starts(range(5)), starts(range(5, 10))
    assert sorted(epoch0) == sorted(epoch1) == list(range(0, 400, 10))
    assert not np.array_equal(epoch0, epoch1)


def test_processes_read_disjoint_slices_of_the_same_global_batch():
    w = windows(5_001, 10)
    whole = BatchLoader([w], 8, seed=3).batch(11)["inputs"]
    for count in (2, 4):
        parts = [BatchLoader([w], 8, seed=3, process_index=i, process_count=count).batch(11)["inputs"]
                 for i in range(count)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_mixture_follows_the_weights():
    a = PackedWindows([np.zeros(10_001, np.int32)], [np.zeros(1, np.int64)], 10)
    b = PackedWindows([np.ones(10_001, np.int32)], [np.zeros(1, np.int64)], 10)
    loader = BatchLoader([a, b], 20, seed=0, weights=[0.75, 0.25])
    share_b = np.mean([loader.batch(s)["inputs"][:, 0].mean() for s in range(50)])
    assert share_b == pytest.approx(0.25, abs=0.01)


def test_prefetching_yields_the_same_batches_in_order():
    loader = BatchLoader([windows(2_001, 10)], 4, seed=2)
    plain, ahead = loader.iterate(3), loader.iterate(3, prefetch=3)
    for step in range(3, 12):
        expected = loader.batch(step)["inputs"]
        np.testing.assert_array_equal(next(plain)["inputs"], expected)
        np.testing.assert_array_equal(next(ahead)["inputs"], expected)
