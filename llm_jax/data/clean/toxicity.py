"""Lexicon-based toxicity score of a document: the share of its word tokens that hit a small list of offensive words.

Method: the text is lowercased and split into tokens (runs of letters, digits and the substitution characters
`@ $ *`, with `!` allowed inside a token: "sh!t"). In a token that holds a letter, leetspeak is undone
(0->o 1->i 3->e 4->a 5->s 7->t @->a $->s !->i), and a token matches a lexicon word when it equals the word, the word
plus a plural -s/-es, or one of those after runs of 3+ equal letters are cut to 2 or 1 ("fuuuck"); a token with `*`
in it ("f*ck", "f**k") matches a lexicon word of the same length that agrees on its other characters, if at least
two of them are letters. Phrases of the lexicon ("kill yourself") match consecutive tokens. Matching is on whole
tokens, so a word holding a lexicon word as a substring ("Scunthorpe", "assessment", "Cockburn") is not flagged.
`toxicity` = tokens covered by a match / tokens; `is_toxic` compares it with a threshold.

The lexicon ships as `data/toxic_words.txt` (a few dozen profanities, insults, slurs and threat phrases); a caller
may pass its own. The same normalisation as `llm_jax.eval.safety` (which screens model outputs) plus `*` masks,
`!` and phrases.

Limits, plainly: English only; context-blind (a quotation, a news report about a slur, a reclaimed or medical use
and an attack score the same; "kill the process" is clean only because the phrase list is narrow); it misses
implicit or veiled toxicity, sarcasm, dog whistles, misspellings it does not undo (spaced "f u c k") and every word
not listed; a share of tokens favours short texts (one slur in a tweet outweighs one in an essay). Use it as a cheap
first screen; a learned classifier (e.g. Perspective API, Detoxify, Llama Guard) is what production pipelines pair
it with. References: Raffel et al. 2020 (C4's "List of Dirty, Naughty, Obscene, and Otherwise Bad Words" filter);
Rae et al. 2021 (Gopher's quality filters); Dodge et al. 2021 (what such lists remove from C4).
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Iterable

_TOKEN = re.compile(r"[\w@$*]+(?:!+[\w@$*]+)*")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_RUNS3 = re.compile(r"(\w)\1{2,}")


class Lexicon:
    """Single words (a set, and by length for `*` masks) and phrases (token tuples, by first token)."""

    def __init__(self, entries: Iterable[str]):
        self.words: set[str] = set()
        self.phrases: dict[str, list[tuple[str, ...]]] = {}
        for entry in entries:
            tokens = tuple(normalize_tokens(entry))
            if len(tokens) == 1:
                self.words.add(tokens[0])
            elif tokens:
                self.phrases.setdefault(tokens[0], []).append(tokens)
        for group in self.phrases.values():
            group.sort(key=len, reverse=True)  # the longest phrase first
        self.by_length: dict[int, list[str]] = {}
        for w in sorted(self.words):
            self.by_length.setdefault(len(w), []).append(w)

    def match(self, token: str) -> bool:
        """Whether one normalised token is a lexicon word (see the module docstring)."""
        if "*" in token:
            return self._masked(token)
        forms = (token, _RUNS3.sub(r"\1\1", token), _RUNS3.sub(r"\1", token))
        for form in forms:
            if form in self.words or (form.endswith("s") and form[:-1] in self.words) or (
                    form.endswith("es") and form[:-2] in self.words):
                return True
        return False

    def _masked(self, token: str) -> bool:
        if sum(c.isalpha() for c in token) < 2:
            return False
        for candidate in (token, token[:-1] if token.endswith("s") else ""):
            for w in self.by_length.get(len(candidate), ()):
                if all(c == "*" or c == d for c, d in zip(candidate, w)):
                    return True
        return False


def normalize_tokens(text: str) -> list[str]:
    """Lowercase tokens, leetspeak undone in those that hold a letter: 'Y0u 1d10T!' -> ['you', 'idiot']."""
    return [t.translate(_LEET) if any(c.isalpha() for c in t) else t for t in _TOKEN.findall(text.lower())]


@functools.lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The shipped `data/toxic_words.txt` (comment lines start with #), loaded once."""
    text = resources.files("llm_jax.data.clean").joinpath("data", "toxic_words.txt").read_text(encoding="utf-8")
    return Lexicon(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def toxic_spans(text: str, lexicon: Lexicon | None = None) -> tuple[list[tuple[int, int]], int]:
    """The matches as (first token, end token) index pairs over `normalize_tokens(text)`, and the token count."""
    lexicon = lexicon or default_lexicon()
    tokens = normalize_tokens(text)
    spans, i = [], 0
    while i < len(tokens):
        for phrase in lexicon.phrases.get(tokens[i], ()):
            if tuple(tokens[i:i + len(phrase)]) == phrase:
                spans.append((i, i + len(phrase)))
                i += len(phrase)
                break
        else:
            if lexicon.match(tokens[i]):
                spans.append((i, i + 1))
            i += 1
    return spans, len(tokens)


def toxicity(text: str, lexicon: Lexicon | None = None) -> float:
    """The share of word tokens covered by a lexicon match, in [0, 1]; 0.0 for a text without tokens."""
    spans, n = toxic_spans(text, lexicon)
    return sum(e - s for s, e in spans) / n if n else 0.0


def is_toxic(text: str, threshold: float = 0.01, lexicon: Lexicon | None = None) -> bool:
    """True when `toxicity(text)` exceeds `threshold` (by default: more than 1 token in 100 hits the lexicon)."""
    return toxicity(text, lexicon) > threshold
