"""Deterministic, shardable batches over packed token streams (grain MapDataset).

A batch is a pure function of (seed, step, process layout): global example `step * batch + row` of a
per-epoch shuffled order of fixed-length windows (the shuffle of epoch e is a pure function of seed + e), so
resuming at step k needs only k. Each process reads only its contiguous slice of rows. Windows carry segment
ids (which document each position belongs to) so attention can be kept inside a document. Several datasets
mix by weight; a background thread prepares the next batches while the step runs.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
from typing import Iterator, Sequence

import grain
import numpy as np


class PackedWindows:
    """Window i of a shard = tokens[j*L : j*L + L + 1] (L inputs + their next-token targets) with segment ids.

    Windows never span two shards; documents inside a shard are concatenated (each ends with EOS), so a
    window may hold the end of one document and the start of the next — segment ids tell them apart.
    """

    def __init__(self, tokens: Sequence[np.ndarray], doc_starts: Sequence[np.ndarray], seq_len: int):
        self.tokens, self.doc_starts, self.seq_len = list(tokens), list(doc_starts), seq_len
        counts = [max((t.size - 1) // seq_len, 0) for t in self.tokens]
        self._ends = np.cumsum(counts)

    @classmethod
    def from_split(cls, split, seq_len: int) -> "PackedWindows":
        return cls(split.tokens, split.doc_starts, seq_len)

    @classmethod
    def from_array(cls, tokens: np.ndarray, seq_len: int) -> "PackedWindows":
        return cls([tokens], [np.zeros(1, np.int64)], seq_len)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        i = int(i)
        shard = int(np.searchsorted(self._ends, i, side="right"))
        local = i - (int(self._ends[shard - 1]) if shard else 0)
        start = local * self.seq_len
        tokens = np.asarray(self.tokens[shard][start: start + self.seq_len + 1], dtype=np.int32)
        docs = np.searchsorted(self.doc_starts[shard], np.arange(start, start + self.seq_len + 1), side="right")
        return {"tokens": tokens, "segments": (docs - docs[0] + 1).astype(np.int32)}


class BatchLoader:
    def __init__(self, sources: Sequence[PackedWindows], global_batch: int, seed: int, weights=None,
                 shuffle: bool = True, process_index: int = 0, process_count: int = 1):
        if global_batch % process_count:
            raise ValueError(f"global batch {global_batch} does not divide over {process_count} processes")
        empty = [i for i, s in enumerate(sources) if len(s) == 0]
        if empty:
            raise ValueError(f"dataset(s) {empty} have no row (window of {sources[0].seq_len + 1} tokens, or pair)")
        parts = [grain.MapDataset.source(s) for s in sources]
        if shuffle:
            parts = [p.shuffle(seed=(seed + 7919 * i) % 2**32) for i, p in enumerate(parts)]
        self.dataset = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, list(weights))
        self.global_batch, self.seed = global_batch, seed
        self.local_batch = global_batch // process_count
        self.row_offset = process_index * self.local_batch
        self.num_windows = sum(len(s) for s in sources)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of global batch `step`: inputs, targets, segment_ids, each (local_batch, L) — or,
        over rows that are not token windows (seq2seq pairs), each of their fields stacked."""
        first = step * self.global_batch + self.row_offset
        rows = [self.dataset[first + r] for r in range(self.local_batch)]
        if "tokens" not in rows[0]:
            return {name: np.stack([r[name] for r in rows]) for name in rows[0]}
        tokens = np.stack([r["tokens"] for r in rows])
        segments = np.stack([r["segments"] for r in rows])
        return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": segments[:, :-1]}

    def iterate(self, start_step: int, prefetch: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Batches start_step, start_step + 1, ...; with prefetch > 0 a thread keeps that many ready."""
        if not prefetch:
            step = start_step
            while True:
                yield self.batch(step)
                step += 1
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llm_jax-prefetch") as pool:
            queue = [pool.submit(self.batch, start_step + k) for k in range(prefetch)]
            step = start_step + prefetch
            while True:
                batch = queue.pop(0).result()
                queue.append(pool.submit(self.batch, step))
                step += 1
                yield batch


def fingerprint(manifests: Sequence[dict], weights: Sequence[float] | None, seed: int) -> str:
    """Identifies the data a run reads: tokenizer, split sizes, mixture weights and seed."""
    spec = [{"tokenizer": m["tokenizer"]["sha256"], "splits": {k: v["tokens"] for k, v in m["splits"].items()}}
            for m in manifests]
    blob = json.dumps({"datasets": spec, "weights": list(weights or []), "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
