"""The one tokenizer interface every kind implements, the JSON file the kinds trained here save to, and the
bounded text every trainer sees (`training_text`)."""

from __future__ import annotations

import abc
import os
import random
from typing import Iterator, Sequence

import regex

from llm_jax.errors import UserError
from llm_jax.fileio import atomic_write_json

SPECIAL_ROLES = ("bos", "eos", "pad", "unk")
NATIVE_FILE = "tokenizer.llm_jax.json"  # byte-level BPE, WordPiece, char and word tokenizers trained here
# Every trainer sees at most TRAIN_BUDGET_CHARS characters (a sample of the documents beyond it: tokenizers
# stop improving long before), in pieces of at most TRAIN_PIECE_CHARS (sentencepiece skips longer lines, and
# a regex over a 50 MB line builds millions of objects at once). See `training_text`.
TRAIN_BUDGET_CHARS = 20_000_000
TRAIN_PIECE_CHARS = 16_384
ENCODE_PIECE_CHARS = 1 << 20  # `Tokenizer.encode_long`'s pieces
# Unicode White_Space, as the tokenizers' own `regex` patterns see it (Python's str.isspace adds \x1c-\x1f)
_SPACE = regex.compile(r"\s")
_SPACE_BEFORE_WORD = regex.compile(r"\S(\s)")  # reversed text: a whitespace character followed by a non-space one
_NEWLINE_BEFORE_WORD = regex.compile(r"\S(\n)")


class TokenizerError(UserError):
    """A tokenizer file is missing or cannot be read, or a tokenizer cannot be trained as asked."""


class Tokenizer(abc.ABC):
    """encode / decode / vocab_size, the special ids (bos, eos, pad, unk; None where a kind has none), save."""

    kind: str = ""
    special: dict[str, int]
    # Where any text may be cut without changing its encoding — encode(a + b) == encode(a) + encode(b) — as a
    # regex whose group 1 starts the second piece; None where no such place is known. See `encode_long`.
    cut: regex.Pattern | None = None

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    def save(self, directory: str) -> str:
        """Writes the tokenizer into `directory`; returns the file's path."""

    def encode_batch(self, texts: Sequence[str], threads: int = 0) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_long(self, text: str, piece_chars: int = ENCODE_PIECE_CHARS) -> Iterator[list[int]]:
        """encode(text) as the ids of consecutive pieces of about `piece_chars` characters, cut where `cut`
        allows (in one piece where it is None): a long document costs the memory of one piece at a time, not
        the library's per-character structures for all of it (sentencepiece: ~20 bytes per byte)."""
        start = 0
        while self.cut is not None and len(text) - start > piece_chars:
            m = self.cut.search(text, start + piece_chars)
            if m is None:
                break
            yield self.encode(text[start:m.start(1)])
            start = m.start(1)
        yield self.encode(text[start:])

    @property
    def bos_id(self) -> int | None:
        return self.special.get("bos")

    @property
    def eos_id(self) -> int | None:
        return self.special.get("eos")

    @property
    def pad_id(self) -> int | None:
        return self.special.get("pad")

    @property
    def unk_id(self) -> int | None:
        return self.special.get("unk")


def write_native(directory: str, payload: dict) -> str:
    path = os.path.join(directory, NATIVE_FILE)
    atomic_write_json(path, payload, ensure_ascii=False)
    return path


def bounded_pieces(text: str, piece_chars: int = TRAIN_PIECE_CHARS, end: int | None = None) -> Iterator[str]:
    """`text[:end]` cut into pieces of at most `piece_chars` characters that concatenate back to it. A cut falls
    just before the last newline of the window that precedes a word (so the lines sentencepiece trains on do
    not change), else before the whitespace character that precedes its last word (the GPT-2 regex and
    WordPiece split there too, so the chunks they count do not change either way), else before its last
    whitespace character, else (no whitespace at all) hard at `piece_chars`."""
    end = len(text) if end is None else min(end, len(text))
    start = 0
    while end - start > piece_chars:
        cut, hi = start + piece_chars, min(start + piece_chars + 2, len(text))
        backwards = text[start + 1:hi][::-1]  # backwards[k] = text[hi - 1 - k]: the first match is the last
        m = (_NEWLINE_BEFORE_WORD.search(backwards) or _SPACE_BEFORE_WORD.search(backwards)
             or _SPACE.search(backwards, hi - 1 - cut))
        if m:
            cut = hi - 1 - m.start(m.lastindex or 0)
        yield text[start:cut]
        start = cut
    if end > start:
        yield text[start:end]


def training_text(docs: Sequence[str], budget_chars: int = TRAIN_BUDGET_CHARS,
                  piece_chars: int = TRAIN_PIECE_CHARS, seed: int = 0) -> Iterator[str]:
    """What a tokenizer trains on: the documents cut by `bounded_pieces` — all of them in order when they
    total at most `budget_chars` characters, else a seeded random sample of them (kept in their order) up to
    the budget, the last one sampled cut short. Bounds a trainer's memory whatever the corpus's shape."""
    allowed = {}  # document index -> characters used
    if sum(map(len, docs)) <= budget_chars:
        allowed = {i: len(d) for i, d in enumerate(docs)}
    else:
        order, left = list(range(len(docs))), budget_chars
        random.Random(seed).shuffle(order)
        for i in order:
            if left <= 0:
                break
            allowed[i] = min(len(docs[i]), left)
            left -= allowed[i]
    for i in sorted(allowed):
        yield from bounded_pieces(docs[i], piece_chars, allowed[i])


def special_tokens(names: dict[str, str], first_id: int) -> tuple[dict[str, int], list[str]]:
    """Ids for special tokens appended after the regular vocabulary: ({role: id}, [token strings])."""
    roles = [r for r in SPECIAL_ROLES if r in names]
    strings = list(dict.fromkeys(names[r] for r in roles))  # one id when roles share a string
    return {r: first_id + strings.index(names[r]) for r in roles}, strings
