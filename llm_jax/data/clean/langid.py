"""Language identification of a document, a deterministic wrapper of `langdetect` (PyPI langdetect 1.0.9).

Method: langdetect is Nakatani Shuyo's language-detection library ported from Java: naive Bayes over character 1-3
grams with profiles of 55 languages learned from Wikipedia (shipped inside the package, so it works offline). It
samples n-grams at random and averages 7 trials; this wrapper gives it its own factory with seed 0, so the same
text always gets the same answer (the global `langdetect.DetectorFactory` is left alone). Only the first
`max_chars` characters (default 2000) are read: enough for a confident answer, and a long document costs no more.
The codes are ISO 639-1 ("en", "de", ...); langdetect's "zh-cn" / "zh-tw" become "zh". A text without letters
(empty, digits, punctuation) is "unknown" with probability 0.0.

Limits: 55 languages only (no Latin, Basque, ... : such text gets its nearest profile's code); short texts (a few
words) and mixed-language documents are unreliable, and code or markup confuses it; the probability is the
detector's posterior, not a calibrated confidence, so a pipeline should also threshold it (FineWeb keeps English
with fastText-lid176 score >= 0.65). Its pure-Python n-gram loop reads ~1 MB/s per core.
References: Shuyo 2010, "Language Detection Library for Java"; Joulin et al. 2016 (fastText lid.176, what
FineWeb and CCNet use instead); Penedo et al. 2024, "The FineWeb Datasets".
"""

from __future__ import annotations

import collections
import functools

from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

UNKNOWN = "unknown"


@functools.lru_cache(maxsize=1)
def _factory():
    """langdetect's detector factory with every profile loaded (once, ~1 s) and a fixed seed."""
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    return factory


def identify(text: str, max_chars: int = 2000) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the most likely language of `text[:max_chars]`; ("unknown", 0.0) when the
    text has nothing to detect."""
    detector = _factory().create()
    detector.append(text[:max_chars])
    try:
        best = detector.get_probabilities()
    except LangDetectException:  # "No features in text."
        return UNKNOWN, 0.0
    if not best:
        return UNKNOWN, 0.0
    return best[0].lang.split("-")[0], float(best[0].prob)


class LanguageReport:
    """Documents per language over a stream: `add(text)` one at a time, then `counts`, `shares()`, `as_dict()`.

    A document whose top probability is below `min_probability` is counted as "unknown"."""

    def __init__(self, min_probability: float = 0.0, max_chars: int = 2000):
        self.min_probability = min_probability
        self.max_chars = max_chars
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, text: str) -> str:
        """Identifies and counts one document; returns the language it was counted as."""
        lang, prob = identify(text, self.max_chars)
        if prob < self.min_probability:
            lang = UNKNOWN
        self.counts[lang] += 1
        return lang

    def update(self, texts) -> "LanguageReport":
        for text in texts:
            self.add(text)
        return self

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def shares(self) -> dict[str, float]:
        """Fraction of documents per language, most frequent first (ties by code)."""
        total = self.total
        return {lang: n / total for lang, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))}

    def as_dict(self) -> dict:
        return {"documents": self.total, "counts": dict(sorted(self.counts.items())), "shares": self.shares()}
