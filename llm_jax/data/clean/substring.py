"""Sequence-level deduplication: spans of >= N words that already appeared in an earlier document are cut out.

An n-gram hash approximation of Lee et al. 2022's ExactSubstr (suffix-array) method. Every window of `n`
consecutive word tokens (default 50) gets a stable 64-bit hash: each token is hashed with blake2b (8 bytes), the
window is the polynomial sum(t[i+k] * P**k) mod 2**64 over its token hashes (computed for all windows at once with a
prefix sum and P's modular inverse), then mixed by the splitmix64 finalizer so `hash % shards` spreads evenly. A
window whose hash was seen in an earlier document (processing order) marks its n tokens; the maximal runs of marked
tokens are removed from the later document, and the first occurrence stays.

What differs from the suffix array: (1) the unit is whitespace-separated words, not BPE tokens or bytes, so a copy
with different spacing still matches but one with changed punctuation attached to a word does not; (2) only whole
windows of n words are compared, so a repeat counts when it holds at least n consecutive equal words (the suffix
array compares token sequences at every offset of the corpus at once); (3) a hash match is taken as equality
(a false match has probability ~2**-64 per pair of windows); (4) only repeats across documents count, and the
earliest one is kept, where Lee et al. consider repeats anywhere in the corpus, within a document included;
(5) streaming: one document at a time, no corpus-wide index build.

Memory: the seen-set holds one 8-byte hash per window of the corpus so far (a Python set costs ~60-70 bytes an
entry), so it grows with the corpus. A distributed version shards the hash space: pass 1 maps every window to
(hash, document position) and each of S reducers keeps, for the hashes with `hash % S == s` (`shard_of`), the
earliest position; pass 2 asks the owning shard whether a window's first position is earlier than the document's
(`remove_repeats` with a callable `seen`). The functions here take and return arrays so both passes can call them.

References: Lee et al. 2022, "Deduplicating Training Data Makes Language Models Better" (ACL);
github.com/google-research/deduplicate-text-datasets; Broder 1997 (shingling); Steele et al. 2014 (splitmix64).
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable, Sequence

import numpy as np

_P = np.uint64(0x100000001B3)  # an odd multiplier (FNV-64's prime): invertible mod 2**64
_P_INV = np.uint64(pow(int(_P), -1, 1 << 64))
_WORD = re.compile(r"\S+")
SeenLookup = Callable[[np.ndarray], np.ndarray]


def token_hashes(tokens: Sequence[str]) -> np.ndarray:
    """blake2b-64 of every token's UTF-8 bytes, as uint64 (stable across processes, unlike hash())."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
                        for t in tokens), np.uint64, count=len(tokens))


def mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every output bit depends on every input bit."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def window_hashes(tokens: Sequence[str], n: int = 50) -> np.ndarray:
    """uint64 hash of every window tokens[i:i+n], i = 0 .. len(tokens)-n (empty when the text is shorter)."""
    if n < 1:
        raise ValueError(f"window length must be >= 1, got {n}")
    count = len(tokens) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    prefix, inverse = polynomial_prefix(token_hashes(tokens))
    with np.errstate(over="ignore"):
        windows = (prefix[n:] - prefix[:count]) * inverse[:count]  # sum_k t[i+k] * P**k
    return mix(windows)


def polynomial_prefix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prefix, inverse), each len(values) + 1 long: prefix[i] = sum_{k<i} values[k] P**k and inverse[i] = P**-i,
    mod 2**64, so (prefix[j] - prefix[i]) * inverse[i] hashes values[i:j] in O(1) (the quality classifier's n-grams
    use it too)."""
    with np.errstate(over="ignore"):
        powers = np.ones(len(values) + 1, np.uint64)
        powers[1:] = np.cumprod(np.full(len(values), _P, np.uint64), dtype=np.uint64)
        inverse = np.ones(len(values) + 1, np.uint64)
        inverse[1:] = np.cumprod(np.full(len(values), _P_INV, np.uint64), dtype=np.uint64)
        prefix = np.zeros(len(values) + 1, np.uint64)
        prefix[1:] = np.cumsum(values * powers[:-1], dtype=np.uint64)
    return prefix, inverse


def shard_of(hashes: np.ndarray, shards: int) -> np.ndarray:
    """The shard that owns each hash in a distributed seen-table."""
    return (hashes % np.uint64(shards)).astype(np.int64)


def _lookup(seen: set | SeenLookup, hashes: np.ndarray) -> np.ndarray:
    if callable(seen):
        return np.asarray(seen(hashes), bool)
    return np.fromiter((h in seen for h in hashes.tolist()), bool, count=len(hashes))


def repeat_mask(n_tokens: int, seen_windows: np.ndarray, n: int) -> np.ndarray:
    """Boolean per token: inside some window flagged in `seen_windows` (one flag per window start)."""
    marks = np.zeros(n_tokens + 1, np.int64)
    starts = np.flatnonzero(seen_windows)
    np.add.at(marks, starts, 1)
    np.add.at(marks, starts + n, -1)
    return np.cumsum(marks[:n_tokens]) > 0


def spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in `mask` as [start, end) pairs."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def remove_repeats(tokens: Sequence[str], seen: set | SeenLookup, n: int = 50,
                   hashes: np.ndarray | None = None) -> tuple[list[str], int]:
    """`tokens` less every token covered by a window whose hash `seen` holds (a set of ints, or a function from a
    uint64 array to a boolean array), and how many tokens were removed. `hashes`: this document's
    `window_hashes`, when already computed."""
    hashes = window_hashes(tokens, n) if hashes is None else hashes
    if not len(hashes):
        return list(tokens), 0
    mask = repeat_mask(len(tokens), _lookup(seen, hashes), n)
    kept = [t for t, drop in zip(tokens, mask.tolist()) if not drop]
    return kept, len(tokens) - len(kept)


def text_words(text: str) -> list[re.Match]:
    """The whitespace-separated words of `text`, with their positions."""
    return list(_WORD.finditer(text))


def cut_words(text: str, words: list[re.Match], drop: np.ndarray) -> str:
    """`text` less each run of dropped words, cut from its first word's start to its last word's end (the
    whitespace around a cut, line breaks included, stays)."""
    pieces, cursor = [], 0
    for start, end in spans(drop):
        pieces.append(text[cursor:words[start].start()])
        cursor = words[end - 1].end()
    pieces.append(text[cursor:])
    return "".join(pieces)


class SubstringDedup:
    """One-process streaming dedup: `process(tokens)` per document in order returns (kept tokens, removed count).

    `removed_tokens`, `removed_spans` and `documents` accumulate over the stream."""

    def __init__(self, n: int = 50):
        if n < 1:
            raise ValueError(f"window length must be >= 1, got {n}")
        self.n = n
        self.seen: set[int] = set()
        self.documents = 0
        self.removed_tokens = 0
        self.removed_spans = 0

    def process(self, tokens: Sequence[str]) -> tuple[list[str], int]:
        hashes = window_hashes(tokens, self.n)
        self.documents += 1
        self._last_mask = np.zeros(len(tokens), bool)
        if not len(hashes):
            return list(tokens), 0
        found = _lookup(self.seen, hashes)  # earlier documents only: this one's windows are added after
        mask = repeat_mask(len(tokens), found, self.n)
        self._last_mask = mask
        self.seen.update(hashes.tolist())
        kept = [t for t, drop in zip(tokens, mask.tolist()) if not drop]
        self.removed_tokens += len(tokens) - len(kept)
        self.removed_spans += len(spans(mask))
        return kept, len(tokens) - len(kept)

    def process_text(self, text: str) -> tuple[str, int]:
        """`process` on the whitespace-separated words of `text`: each removed run of words is cut from its first
        word's start to its last word's end, so the whitespace around it (line breaks included) stays."""
        words = text_words(text)
        kept, removed = self.process([w.group(0) for w in words])
        return (cut_words(text, words, self._last_mask), removed) if removed else (text, 0)

    def stats(self) -> dict:
        return {"documents": self.documents, "removed_tokens": self.removed_tokens,
                "removed_spans": self.removed_spans, "seen_windows": len(self.seen)}
