import numpy as np

from llm_jax.data.loader import BatchLoader, TokenWindows


def test_windows_pair_inputs_with_next_token_targets():
    tokens = np.arange(33, dtype=np.int32)
    windows = TokenWindows(tokens, 8)
    assert len(windows) == 4
    np.testing.assert_array_equal(windows[1], np.arange(8, 17))
    batch = BatchLoader(tokens, 8, 2, seed=0, shuffle=False).batch(0)
    np.testing.assert_array_equal(batch["inputs"][0], np.arange(8))
    np.testing.assert_array_equal(batch["targets"][0], np.arange(1, 9))


def test_batches_are_a_pure_function_of_seed_and_step():
    tokens = np.arange(10_001, dtype=np.int32)
    a, b = BatchLoader(tokens, 10, 4, seed=7), BatchLoader(tokens, 10, 4, seed=7)
    for step in (5, 0, 123, 5):  # any order, any step
        np.testing.assert_array_equal(a.batch(step)["inputs"], b.batch(step)["inputs"])
    assert not np.array_equal(a.batch(0)["inputs"], BatchLoader(tokens, 10, 4, seed=8).batch(0)["inputs"])


def test_each_epoch_covers_every_window_once_in_a_new_order():
    tokens = np.arange(401, dtype=np.int32)  # 40 windows of 10
    loader = BatchLoader(tokens, 10, 8, seed=1)
    starts = lambda steps: np.concatenate([loader.batch(s)["inputs"][:, 0] for s in steps])
    epoch0, epoch1 = starts(range(5)), starts(range(5, 10))
    assert sorted(epoch0) == sorted(epoch1) == list(range(0, 400, 10))
    assert not np.array_equal(epoch0, epoch1)


def test_processes_read_disjoint_slices_of_the_same_global_batch():
    tokens = np.arange(5_001, dtype=np.int32)
    whole = BatchLoader(tokens, 10, 8, seed=3).batch(11)["inputs"]
    for count in (2, 4):
        parts = [BatchLoader(tokens, 10, 8, seed=3, process_index=i, process_count=count).batch(11)["inputs"]
                 for i in range(count)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
