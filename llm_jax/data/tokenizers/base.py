"""The one tokenizer interface every kind implements, and the JSON file the kinds trained here save to."""

from __future__ import annotations

import abc
import json
import os
from typing import Sequence

SPECIAL_ROLES = ("bos", "eos", "pad", "unk")
NATIVE_FILE = "tokenizer.llm_jax.json"  # byte-level BPE, WordPiece, char and word tokenizers trained here


class TokenizerError(ValueError):
    """A tokenizer file is missing or cannot be read, or a tokenizer cannot be trained as asked."""


class Tokenizer(abc.ABC):
    """encode / decode / vocab_size, the special ids (bos, eos, pad, unk; None where a kind has none), save."""

    kind: str = ""
    special: dict[str, int]

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
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, ensure_ascii=False)
    os.replace(tmp, path)
    return path


def special_tokens(names: dict[str, str], first_id: int) -> tuple[dict[str, int], list[str]]:
    """Ids for special tokens appended after the regular vocabulary: ({role: id}, [token strings])."""
    roles = [r for r in SPECIAL_ROLES if r in names]
    strings = list(dict.fromkeys(names[r] for r in roles))  # one id when roles share a string
    return {r: first_id + strings.index(names[r]) for r in roles}, strings
