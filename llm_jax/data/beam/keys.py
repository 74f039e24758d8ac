"""The pure numpy parts of the distributed deduplication: keys, hash partitions, and what each partition decides.

Every shuffle of the pipeline moves fixed-width rows (numpy arrays), never one Python object per document or per
window: a unit writes its rows grouped by partition (`hash % partitions`, llm_jax/data/beam/stages.py
save_partitioned), and a partition's worker concatenates its slice of every unit's rows and decides with sorts.
Documents are named by their id, `unit << 32 | ordinal` (ORDINAL_BITS), so "earliest" means "first in reading
order", as in the one-process path.
"""

from __future__ import annotations

import numpy as np

from llm_jax.data.clean.substring import mix

ORDINAL_BITS = 32
MAX_BUCKET_NEIGHBOURS = 32  # a member of a big LSH bucket is compared with at most this many earlier members


def doc_id(unit: int, ordinal: int) -> np.uint64:
    return (np.uint64(unit) << np.uint64(ORDINAL_BITS)) | np.uint64(ordinal)


def doc_ids(unit: int, n: int) -> np.ndarray:
    return (np.uint64(unit) << np.uint64(ORDINAL_BITS)) | np.arange(n, dtype=np.uint64)


def split_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit, ordinal) of each id."""
    ids = np.asarray(ids, np.uint64)
    return (ids >> np.uint64(ORDINAL_BITS)).astype(np.int64), (ids & np.uint64(2**ORDINAL_BITS - 1)).astype(np.int64)


def partition_of(hashes: np.ndarray, partitions: int) -> np.ndarray:
    return (np.asarray(hashes, np.uint64) % np.uint64(partitions)).astype(np.int64)


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: a hash of each band's `rows` MinHash values and the band's index (equal bands of different
    indices do not collide)."""
    sig = signatures.reshape(len(signatures), bands, rows).astype(np.uint64)
    h = np.zeros(sig.shape[:2], np.uint64)
    with np.errstate(over="ignore"):
        for k in range(rows):
            h = h * np.uint64(0x100000001B3) + sig[:, :, k]
        h ^= (np.arange(bands, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    return mix(h)


def _runs(keys: np.ndarray) -> np.ndarray:
    """Start indices of runs of equal rows of a sorted (m,) or (m, k) key array, plus m at the end."""
    if keys.ndim == 1:
        change = keys[1:] != keys[:-1]
    else:
        change = (keys[1:] != keys[:-1]).any(axis=1)
    return np.flatnonzero(np.r_[True, change, True])


def later_copies(rows: np.ndarray) -> np.ndarray:
    """Exact dedup in one partition. rows: (m, 3) uint64 (key_hi, key_lo, id). Returns the ids that are not the
    earliest of their key."""
    if not len(rows):
        return np.zeros(0, np.uint64)
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
    first = np.zeros(len(rows), bool)
    first[_runs(rows[:, :2])[:-1]] = True
    return rows[~first, 2]


def bucket_pairs(rows: np.ndarray) -> np.ndarray:
    """LSH candidates in one partition. rows: (m, 2) uint64 (band hash, id). Returns (e, 2) pairs (earlier id,
    later id) of documents sharing a bucket: every member with each of the MAX_BUCKET_NEIGHBOURS members before it."""
    if not len(rows):
        return np.zeros((0, 2), np.uint64)
    rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    bounds = _runs(rows[:, 0])
    pairs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a < 2:
            continue
        ids = rows[a:b, 1]
        for lag in range(1, min(b - a, MAX_BUCKET_NEIGHBOURS + 1)):
            pairs.append(np.stack([ids[:-lag], ids[lag:]], axis=1))
    return np.unique(np.concatenate(pairs), axis=0) if pairs else np.zeros((0, 2), np.uint64)


def similar(signatures_a: np.ndarray, signatures_b: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean per pair: the fraction of equal MinHash values (estimated Jaccard similarity) reaches threshold."""
    return (signatures_a == signatures_b).mean(axis=1) >= threshold


def first_windows(rows: np.ndarray) -> np.ndarray:
    """Substring dedup in one partition. rows: (m, 3) uint64 (window hash, document id, word position). Returns the
    rows (id, position) of windows whose hash occurs in an earlier document (the earliest document keeps its own,
    repeats inside one document included, as the one-process SubstringDedup does)."""
    if not len(rows):
        return np.zeros((0, 2), np.uint64)
    rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    bounds = _runs(rows[:, 0])
    first_doc = np.repeat(rows[bounds[:-1], 1], np.diff(bounds))
    return rows[rows[:, 1] != first_doc][:, 1:]


def min_labels(rows: np.ndarray) -> np.ndarray:
    """rows: (m, 2) uint64 (node, label). Returns one row per node, its smallest label, sorted by node."""
    if not len(rows):
        return np.zeros((0, 2), np.uint64)
    rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    return rows[np.r_[True, rows[1:, 0] != rows[:-1, 0]]]


def messages(edges: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One round of min-label propagation out of one partition: (destination, label of the source) for each edge
    (source, destination). labels: min_labels rows holding every source."""
    return np.stack([edges[:, 1], labels[np.searchsorted(labels[:, 0], edges[:, 0]), 1]], axis=1)


class UnionFind:
    """Connected components with the smallest id as each component's root (the document a component keeps)."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
