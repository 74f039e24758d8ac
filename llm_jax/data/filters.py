"""Quality filters: length and character heuristics, and perplexity against a reference model.

The reference model is either a character n-gram model trained here (interpolated Witten-Bell smoothing,
so every character has a probability) — on a reference corpus, or cross-fitted on the inputs themselves —
or a trained llm_jax work directory. Documents whose perplexity
exceeds `max_perplexity`, or that fall in the worst `perplexity_quantile` of the batch, are dropped.
"""

from __future__ import annotations

import collections
import math
import re
from typing import Sequence

import numpy as np

_NON_SPACE_RUNS = re.compile(r"\S+")  # what str.split() returns


def heuristic_reason(text: str, f) -> str | None:
    """Why `text` fails the length/character rules of `f` (a data.filter ConfigDict), or None if it passes."""
    n = len(text)
    if f.min_chars and n < f.min_chars:
        return "too_short"
    if f.max_chars and n > f.max_chars:
        return "too_long"
    # counted, not listed: a 50 MB one-line document must not become a list of millions of objects
    if f.min_words and sum(1 for _ in _NON_SPACE_RUNS.finditer(text)) < f.min_words:
        return "too_few_words"
    if f.min_alpha_fraction:
        visible = n - sum(map(str.isspace, text))
        if visible and sum(map(str.isalpha, text)) / visible < f.min_alpha_fraction:
            return "low_alpha_fraction"
    if f.max_duplicate_line_fraction >= 1.0:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines:
        repeated = len(lines) - len(set(lines))
        if repeated / len(lines) > f.max_duplicate_line_fraction:
            return "repeated_lines"
    return None


class CharNgram:
    """P(c | previous n-1 chars) with interpolated Witten-Bell smoothing down to a uniform distribution."""

    def __init__(self, order: int = 5):
        self.order = order
        self.counts = [collections.defaultdict(collections.Counter) for _ in range(order)]
        self.alphabet: set[str] = set()

    def fit(self, texts: Sequence[str], max_chars: int = 5_000_000) -> "CharNgram":
        seen = 0
        for text in texts:
            text = text[:max_chars - seen]  # a huge document stops at the budget too
            padded = "\x02" * (self.order - 1) + text
            self.alphabet.update(text)
            for i in range(self.order - 1, len(padded)):
                c = padded[i]
                for k in range(self.order):  # k = context length
                    self.counts[k][padded[i - k:i]][c] += 1
            seen += len(text)
            if seen >= max_chars:
                break
        self._totals = [{ctx: (sum(cnt.values()), len(cnt)) for ctx, cnt in level.items()} for level in self.counts]
        return self

    def _prob(self, context: str, c: str) -> float:
        p = 1.0 / (len(self.alphabet) + 1)  # +1: an unseen character
        for k in range(self.order):
            ctx = context[len(context) - k:] if k else ""
            total = self._totals[k].get(ctx)
            if total is None:
                continue
            n, types = total
            p = (self.counts[k][ctx][c] + types * p) / (n + types)
        return p

    def perplexity(self, text: str, max_chars: int = 2000) -> float:
        text = text[:max_chars]
        if not text:
            return float("inf")
        padded = "\x02" * (self.order - 1) + text
        nll = 0.0
        for i in range(self.order - 1, len(padded)):
            nll -= math.log(self._prob(padded[i - self.order + 1:i], padded[i]))
        return math.exp(nll / len(text))


def cross_fitted_perplexity(docs: Sequence[str], folds: int = 2) -> np.ndarray:
    """Perplexity of every document under an n-gram model trained on the *other* folds of the same corpus.

    Scoring a document with a model that saw it rewards memorisable junk (random strings score near 1), so
    without a separate reference text the corpus is split into folds by position and each fold is scored by
    a model fitted on the rest.
    """
    scores = np.empty(len(docs))
    for k in range(folds):
        rest = [d for i, d in enumerate(docs) if i % folds != k]
        model = CharNgram().fit(rest or list(docs))
        for i in range(k, len(docs), folds):
            scores[i] = model.perplexity(docs[i])
    return scores


def perplexity_mask(scores: np.ndarray, max_perplexity: float, quantile: float) -> np.ndarray:
    """True where a document is dropped: above the absolute limit, or in the worst `quantile` fraction."""
    drop = np.zeros(len(scores), bool)
    if max_perplexity:
        drop |= scores > max_perplexity
    if quantile and len(scores):
        drop |= scores > np.quantile(scores, 1.0 - quantile)
    return drop
