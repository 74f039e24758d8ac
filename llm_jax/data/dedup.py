"""Document deduplication: exact (hash of normalised text) and near-duplicate (MinHash + LSH).

Near-duplicates: each document's word n-gram shingles are hashed to 32 bits, and `bands * rows` hash functions
h(x) = (a·x + b) >> 32 (multiply-shift, 64-bit wrap-around) give its MinHash signature; the fraction of equal
signature entries estimates the Jaccard similarity of two shingle sets. LSH buckets each band of `rows`
entries, so only documents sharing a bucket are compared. A document is removed when its estimated Jaccard
with an earlier kept document reaches `threshold`; the earliest copy always stays.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import Sequence

import numpy as np

_WORDS = re.compile(r"\w+", re.UNICODE)


def normalise(text: str) -> str:
    """Lower case, whitespace collapsed: copies that differ only in case or spacing hash the same."""
    return " ".join(text.lower().split())


def exact_duplicates(docs: Sequence[str]) -> np.ndarray:
    """Boolean mask: True for every document whose normalised text appeared earlier."""
    seen, mask = set(), np.zeros(len(docs), bool)
    for i, doc in enumerate(docs):
        key = hashlib.blake2b(normalise(doc).encode("utf-8"), digest_size=16).digest()
        mask[i] = key in seen
        seen.add(key)
    return mask


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """32-bit hashes of the document's word n-grams (one shingle for documents shorter than n words)."""
    words = _WORDS.findall(text.lower())
    if len(words) <= n:
        grams = [" ".join(words)]
    else:
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    return np.unique(np.fromiter((zlib.crc32(g.encode("utf-8")) for g in grams), np.uint64, len(grams)))


class MinHashLSH:
    def __init__(self, bands: int = 16, rows: int = 8, shingle: int = 5, threshold: float = 0.8, seed: int = 0):
        self.bands, self.rows, self.shingle, self.threshold = bands, rows, shingle, threshold
        rng = np.random.default_rng(seed)
        n = bands * rows
        self.a = rng.integers(1, 2**63, n, dtype=np.uint64) | np.uint64(1)  # odd multipliers
        self.b = rng.integers(0, 2**63, n, dtype=np.uint64)

    def signatures(self, docs: Sequence[str], chunk: int = 2048) -> np.ndarray:
        """(len(docs), bands*rows) uint32 MinHash signatures, computed a chunk of documents at a time."""
        out = np.empty((len(docs), len(self.a)), np.uint32)
        for start in range(0, len(docs), chunk):
            shingles = [shingle_hashes(d, self.shingle) for d in docs[start:start + chunk]]
            offsets = np.cumsum([0] + [len(s) for s in shingles[:-1]])
            flat = np.concatenate(shingles)
            hashed = (self.a[:, None] * flat[None, :] + self.b[:, None]) >> np.uint64(32)  # (perm, shingles)
            out[start:start + len(shingles)] = np.minimum.reduceat(hashed, offsets, axis=1).T.astype(np.uint32)
        return out

    def duplicates(self, docs: Sequence[str]) -> np.ndarray:
        """Boolean mask: True for documents near-duplicating an earlier kept document."""
        sigs = self.signatures(docs)
        buckets: list[dict[bytes, list[int]]] = [dict() for _ in range(self.bands)]
        mask = np.zeros(len(docs), bool)
        for i in range(len(docs)):
            keys = [sigs[i, b * self.rows:(b + 1) * self.rows].tobytes() for b in range(self.bands)]
            candidates = {j for band, key in zip(buckets, keys) for j in band.get(key, ())}
            if any(np.mean(sigs[j] == sigs[i]) >= self.threshold for j in candidates):
                mask[i] = True
                continue
            for band, key in zip(buckets, keys):
                band.setdefault(key, []).append(i)
        return mask


def jaccard(a: str, b: str, n: int = 5) -> float:
    """Exact Jaccard similarity of two documents' shingle sets (for tests and reports)."""
    sa, sb = set(shingle_hashes(a, n).tolist()), set(shingle_hashes(b, n).tolist())
    return len(sa & sb) / max(len(sa | sb), 1)
