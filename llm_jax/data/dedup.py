"""Document deduplication: exact (hash of normalised text) and near-duplicate (MinHash + LSH).

Near-duplicates: each document's word n-gram shingles are hashed to 32 bits, and `bands * rows` hash functions
h(x) = (a·x + b) >> 32 (multiply-shift, 64-bit wrap-around) give its MinHash signature; the fraction of equal
signature entries estimates the Jaccard similarity of two shingle sets. LSH buckets each band of `rows`
entries, so only documents sharing a bucket are compared. A document is removed when its estimated Jaccard
with an earlier kept document reaches `threshold`; the earliest copy always stays.
"""

from __future__ import annotations

import array
import collections
import hashlib
import itertools
import re
import zlib
from typing import Iterator, Sequence

import numpy as np

_WORDS = re.compile(r"\w+", re.UNICODE)
MAX_HASH_CELLS = 1 << 22  # (hash functions x shingles) hashed at once: 32 MiB of uint64 bounds the memory


def _normalised_parts(text: str, chunk: int = 1 << 20) -> Iterator[str]:
    """normalise(text) in consecutive parts, a chunk of the text at a time: a 50 MB one-line document never
    becomes a list of millions of words (lowering whole words is lowering the text: case never looks past
    whitespace)."""
    carry, sep = "", ""
    for start in range(0, len(text), chunk):
        part = carry + text[start:start + chunk]
        words = part.split()
        carry = words.pop() if words and not part[-1].isspace() else ""  # a word the next chunk may continue
        if words:
            yield sep + " ".join(words).lower()
            sep = " "
    if carry:
        yield sep + carry.lower()


def normalise(text: str) -> str:
    """Lower case, whitespace collapsed: copies that differ only in case or spacing hash the same."""
    return "".join(_normalised_parts(text))


def exact_key(doc: str) -> bytes:
    """16-byte blake2b of the normalised text: equal for copies that differ only in case or spacing."""
    h = hashlib.blake2b(digest_size=16)
    for part in _normalised_parts(doc):
        h.update(part.encode("utf-8"))
    return h.digest()


def exact_duplicates(docs: Sequence[str]) -> np.ndarray:
    """Boolean mask: True for every document whose normalised text appeared earlier."""
    seen, mask = set(), np.zeros(len(docs), bool)
    for i, doc in enumerate(docs):
        key = exact_key(doc)
        mask[i] = key in seen
        seen.add(key)
    return mask


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """32-bit hashes of the document's word n-grams (one shingle for documents shorter than n words), streamed
    over the words so a long document costs 8 bytes per shingle, not a list of strings."""
    lowered = text.lower()
    words = (m.group() for m in _WORDS.finditer(lowered))
    window = collections.deque(itertools.islice(words, n), maxlen=n)
    hashes = array.array("Q", [zlib.crc32(" ".join(window).encode("utf-8"))])
    for word in words:
        window.append(word)
        hashes.append(zlib.crc32(" ".join(window).encode("utf-8")))
    del words, lowered
    sorted_hashes = np.frombuffer(hashes, np.uint64).copy()
    del hashes
    sorted_hashes.sort()  # in place: np.unique would hold three copies
    return sorted_hashes[np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]]]


class MinHashLSH:
    def __init__(self, bands: int = 16, rows: int = 8, shingle: int = 5, threshold: float = 0.8, seed: int = 0):
        self.bands, self.rows, self.shingle, self.threshold = bands, rows, shingle, threshold
        rng = np.random.default_rng(seed)
        n = bands * rows
        self.a = rng.integers(1, 2**63, n, dtype=np.uint64) | np.uint64(1)  # odd multipliers
        self.b = rng.integers(0, 2**63, n, dtype=np.uint64)

    def signatures(self, docs: Sequence[str]) -> np.ndarray:
        """(len(docs), bands*rows) uint32 MinHash signatures. Shingles of consecutive documents are hashed in
        blocks of at most MAX_HASH_CELLS cells (a long document spans several blocks: its minimum is folded)."""
        n_perm = len(self.a)
        block = max(1, MAX_HASH_CELLS // n_perm)
        out = np.full((len(docs), n_perm), np.iinfo(np.uint32).max, np.uint32)
        pending, first, size = [], 0, 0  # shingle arrays of documents first.. not hashed yet
        for i, doc in enumerate(docs):
            pending.append(shingle_hashes(doc, self.shingle))
            size += len(pending[-1])
            if size >= block or i == len(docs) - 1:
                flat = np.concatenate(pending) if len(pending) > 1 else pending[0]
                owner = np.repeat(np.arange(first, i + 1, dtype=np.int32), [len(p) for p in pending])
                for start in range(0, len(flat), block):
                    self._fold(out, flat[start:start + block], owner[start:start + block])
                pending, first, size = [], i + 1, 0
        return out

    def _fold(self, out: np.ndarray, shingles: np.ndarray, owner: np.ndarray) -> None:
        """out[doc] = min(out[doc], MinHash of the doc's shingles in this block), for the docs of the block."""
        hashed = np.multiply(self.a[:, None], shingles[None, :])  # (perm, shingles), in place below
        hashed += self.b[:, None]
        hashed >>= np.uint64(32)
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        docs = owner[starts]
        out[docs] = np.minimum(out[docs], np.minimum.reduceat(hashed, starts, axis=1).T.astype(np.uint32))

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
