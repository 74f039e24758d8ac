"""Tokenizers behind one interface: sentencepiece models (trained here or loaded) and Hugging Face
`tokenizer.json` files. A work directory keeps its tokenizer as `tokenizer.model` or `tokenizer.json`."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Sequence

import sentencepiece as spm

FILENAMES = ("tokenizer.model", "tokenizer.json")


class TokenizerError(ValueError):
    """A tokenizer file is missing or cannot be read."""


class SentencePieceTokenizer:
    def __init__(self, path: str):
        self.path = path
        self._sp = spm.SentencePieceProcessor(model_file=path)

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size()

    @property
    def bos_id(self) -> int | None:
        return self._sp.bos_id() if self._sp.bos_id() >= 0 else None

    @property
    def eos_id(self) -> int | None:
        return self._sp.eos_id() if self._sp.eos_id() >= 0 else None

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str], threads: int = 0) -> list[list[int]]:
        return self._sp.encode(list(texts), num_threads=threads or os.cpu_count() or 1)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def save(self, directory: str) -> str:
        dest = os.path.join(directory, "tokenizer.model")
        if os.path.abspath(dest) != os.path.abspath(self.path):
            shutil.copyfile(self.path, dest)
        return dest


class HFTokenizer:
    """A Hugging Face `tokenizers` JSON file (what GPT-2 and Llama checkpoints ship)."""

    def __init__(self, path: str):
        from tokenizers import Tokenizer
        self.path = path
        self._tok = Tokenizer.from_file(path)
        self._bos = self._special(("<|begin_of_text|>", "<s>", "<|endoftext|>"))
        self._eos = self._special(("<|end_of_text|>", "<|eot_id|>", "</s>", "<|endoftext|>"))

    def _special(self, candidates) -> int | None:
        for token in candidates:
            idx = self._tok.token_to_id(token)
            if idx is not None:
                return idx
        return None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int | None:
        return self._bos

    @property
    def eos_id(self) -> int | None:
        return self._eos

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], threads: int = 0) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str) -> str:
        dest = os.path.join(directory, "tokenizer.json")
        if os.path.abspath(dest) != os.path.abspath(self.path):
            shutil.copyfile(self.path, dest)
        return dest


def load_tokenizer(path: str):
    """A tokenizer from a file, or from a directory holding tokenizer.model / tokenizer.json."""
    if os.path.isdir(path):
        for name in FILENAMES:
            if os.path.isfile(os.path.join(path, name)):
                return load_tokenizer(os.path.join(path, name))
        raise TokenizerError(f"{path!r} holds no tokenizer ({' or '.join(FILENAMES)})")
    if not os.path.isfile(path):
        raise TokenizerError(f"tokenizer file {path!r} does not exist")
    try:
        if path.endswith(".json"):
            return HFTokenizer(path)
        return SentencePieceTokenizer(path)
    except Exception as e:  # the libraries raise RuntimeError/OSError/Exception for bad files
        raise TokenizerError(f"cannot load tokenizer {path!r}: {e}") from e


def train_sentencepiece(docs: Sequence[str], vocab_size: int, out_path: str, model_type: str = "bpe",
                        max_chars: int = 20_000_000) -> SentencePieceTokenizer:
    """Trains a lossless sentencepiece model: identity normalisation, no whitespace folding, no dummy
    prefix, a newline symbol and byte fallback, so decode(encode(text)) == text for any text."""
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        written = 0
        with open(corpus, "w", encoding="utf-8") as f:
            for d in docs:  # sentencepiece reads lines; newlines come back as the user-defined "\n" piece
                for line in d.splitlines():
                    if line.strip():
                        f.write(line + "\n")
                        written += len(line)
                if written > max_chars:
                    break
        prefix = os.path.join(tmp, "sp")
        spm.SentencePieceTrainer.train(
            input=corpus, model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
            character_coverage=1.0, byte_fallback=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=False, user_defined_symbols=["\n"],
            split_digits=True, allow_whitespace_only_pieces=True, max_sentence_length=1 << 16,
            hard_vocab_limit=model_type != "unigram", num_threads=os.cpu_count() or 1, minloglevel=2,
            unk_id=0, bos_id=1, eos_id=2, pad_id=3)
        shutil.copyfile(prefix + ".model", out_path)
    return SentencePieceTokenizer(out_path)
