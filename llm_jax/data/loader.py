"""Deterministic, shardable batches over a token stream (grain MapDataset).

A batch is a pure function of (seed, step, process layout): global example `step * batch + row` of a
per-epoch shuffled order of fixed-length windows, so resuming at step k only needs k. Each process reads
only its contiguous slice of rows.
"""

from __future__ import annotations

import grain
import numpy as np


class TokenWindows:
    """Window i = tokens[i*L : i*L + L + 1]: L inputs and their L next-token targets (packed documents)."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        self.tokens, self.seq_len = tokens, seq_len
        self._n = (tokens.size - 1) // seq_len

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(i) * self.seq_len
        return self.tokens[start: start + self.seq_len + 1]


class BatchLoader:
    def __init__(self, tokens: np.ndarray, seq_len: int, global_batch: int, seed: int, shuffle: bool = True,
                 process_index: int = 0, process_count: int = 1):
        if global_batch % process_count:
            raise ValueError(f"global batch {global_batch} does not divide over {process_count} processes")
        dataset = grain.MapDataset.source(TokenWindows(tokens, seq_len))
        self.dataset = dataset.shuffle(seed=seed) if shuffle else dataset
        self.global_batch = global_batch
        self.local_batch = global_batch // process_count
        self.row_offset = process_index * self.local_batch
        self.num_windows = len(dataset)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of global batch `step`: inputs and targets, each (local_batch, seq_len)."""
        first = step * self.global_batch + self.row_offset
        windows = np.stack([self.dataset[first + r] for r in range(self.local_batch)]).astype(np.int32)
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}
