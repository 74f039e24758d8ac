"""WordPiece (BERT), trained here with the guide's likelihood score, plus the character- and word-level
baselines. Words are split on whitespace and punctuation, so decoding restores single spaces only."""

from __future__ import annotations

import collections
import heapq
from typing import Iterable, Sequence

import regex

from llm_jax.data.tokenizers.base import Tokenizer, TokenizerError, write_native
from llm_jax.data.tokenizers.bpe import merge_pair

WORD_PATTERN = regex.compile(r"\w+|[^\w\s]")
SPECIAL = {"pad": "[PAD]", "unk": "[UNK]", "bos": "[BOS]", "eos": "[EOS]"}
MAX_WORD_CHARS = 100


def words_of(text: str) -> list[str]:
    return WORD_PATTERN.findall(text)


def join_words(words: Sequence[str]) -> str:
    """Single spaces between words, none before punctuation."""
    out = []
    for w in words:
        if out and not (len(w) == 1 and not w.isalnum()):
            out.append(" ")
        out.append(w)
    return "".join(out)


class VocabTokenizer(Tokenizer):
    """Shared by the kinds whose model is just a vocabulary list with the specials first."""

    cut = regex.compile(r"(\s)")  # words and characters never span whitespace

    def __init__(self, vocab: Sequence[str]):
        self.vocab = list(vocab)
        self.ids = {t: i for i, t in enumerate(self.vocab)}
        self.special = {role: self.ids[s] for role, s in SPECIAL.items() if s in self.ids}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def save(self, directory: str) -> str:
        return write_native(directory, {"kind": self.kind, "vocab": self.vocab})


class WordPiece(VocabTokenizer):
    kind = "wordpiece"

    def encode(self, text: str) -> list[int]:
        out = []
        for word in words_of(text):
            out.extend(self._encode_word(word))
        return out

    def _encode_word(self, word: str) -> list[int]:
        """Greedy longest-match-first; a word with an unmatchable piece becomes [UNK]."""
        if len(word) > MAX_WORD_CHARS:
            return [self.special["unk"]]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    pieces.append(self.ids[piece])
                    break
                end -= 1
            if end == start:
                return [self.special["unk"]]
            start = end
        return pieces

    def decode(self, ids: Sequence[int]) -> str:
        words = []
        for i in map(int, ids):
            piece = self.vocab[i]
            if piece.startswith("##") and words:
                words[-1] += piece[2:]
            else:
                words.append(piece)
        return join_words(words)

    @classmethod
    def train(cls, docs: Iterable[str], vocab_size: int, log=None) -> "WordPiece":
        word_freq = collections.Counter(w for d in docs for w in words_of(d) if len(w) <= MAX_WORD_CHARS)
        vocab = list(SPECIAL.values())
        words = [[w[0]] + ["##" + c for c in w[1:]] for w in word_freq]
        units = sorted({u for parts in words for u in parts})
        if len(vocab) + len(units) > vocab_size:
            raise TokenizerError(f"vocab_size={vocab_size} is below the {len(units)} characters of the corpus")
        merges = learn_wordpiece_merges(words, list(word_freq.values()), vocab_size - len(vocab) - len(units), log)
        return cls(vocab + units + merges)


def _merge_name(a: str, b: str) -> str:
    return a + b[2:] if b.startswith("##") else a + b


def learn_wordpiece_merges(words: list[list[str]], freqs: list[int], n_merges: int, log=None) -> list[str]:
    """Merges the pair maximising freq(ab) / (freq(a) * freq(b)) (how much the merge raises the corpus
    likelihood), `n_merges` times. A merge changes the unit counts of a and b, so every pair touching them
    is re-scored; other pairs keep their scores (max-heap with lazy deletion). Ties: smallest pair."""
    unit_freq, pair_freq = collections.Counter(), collections.Counter()
    where: dict[tuple[str, str], set[int]] = collections.defaultdict(set)
    touching: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    for w, (parts, f) in enumerate(zip(words, freqs)):
        for u in parts:
            unit_freq[u] += f
        for pair in zip(parts, parts[1:]):
            pair_freq[pair] += f
            where[pair].add(w)
            touching[pair[0]].add(pair)
            touching[pair[1]].add(pair)

    def score(pair):
        return pair_freq[pair] / (unit_freq[pair[0]] * unit_freq[pair[1]])

    heap = [(-score(p), p) for p in pair_freq]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        neg, best = heapq.heappop(heap)
        if pair_freq.get(best, 0) <= 0 or -neg != score(best):
            continue  # stale
        a, b = best
        new = _merge_name(a, b)
        merges.append(new)
        changed = set()
        for w in where.pop(best, ()):
            parts, f = words[w], freqs[w]
            if best not in zip(parts, parts[1:]):
                continue
            for u in parts:
                unit_freq[u] -= f
            for pair in zip(parts, parts[1:]):
                pair_freq[pair] -= f
                changed.add(pair)
            merged = words[w] = merge_pair(parts, a, b, new)
            for u in merged:
                unit_freq[u] += f
            for pair in zip(merged, merged[1:]):
                pair_freq[pair] += f
                where[pair].add(w)
                touching[pair[0]].add(pair)
                touching[pair[1]].add(pair)
                changed.add(pair)
        pair_freq.pop(best, None)
        rescore = changed | touching[a] | touching[b] | touching[new]
        for pair in rescore:
            if pair_freq.get(pair, 0) > 0 and unit_freq[pair[0]] > 0 and unit_freq[pair[1]] > 0:
                heapq.heappush(heap, (-score(pair), pair))
        if log and len(merges) % 500 == 0:
            log(f"wordpiece: {len(merges)}/{n_merges} merges")
    return merges


class CharTokenizer(VocabTokenizer):
    """One token per character seen in training; anything else is [UNK]. Exact round trip for seen text."""

    kind = "char"

    def encode(self, text: str) -> list[int]:
        unk = self.special["unk"]
        return [self.ids.get(c, unk) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join("" if self.vocab[i] in SPECIAL.values() else self.vocab[i] for i in map(int, ids))

    @classmethod
    def train(cls, docs: Iterable[str], vocab_size: int | None = None, log=None) -> "CharTokenizer":
        counts = collections.Counter(c for d in docs for c in d)
        keep = [c for c, _ in counts.most_common(None if vocab_size is None else vocab_size - len(SPECIAL))]
        return cls(list(SPECIAL.values()) + sorted(keep))


class WordTokenizer(VocabTokenizer):
    """The `vocab_size` most frequent words and punctuation marks; the rest is [UNK]."""

    kind = "word"

    def encode(self, text: str) -> list[int]:
        unk = self.special["unk"]
        return [self.ids.get(w, unk) for w in words_of(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return join_words([self.vocab[i] for i in map(int, ids)])

    @classmethod
    def train(cls, docs: Iterable[str], vocab_size: int, log=None) -> "WordTokenizer":
        counts = collections.Counter(w for d in docs for w in words_of(d))
        return cls(list(SPECIAL.values()) + [w for w, _ in counts.most_common(vocab_size - len(SPECIAL))])
