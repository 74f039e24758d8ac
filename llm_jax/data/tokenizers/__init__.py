"""Tokenizers behind one interface (`base.Tokenizer`): kinds trained here (byte-level BPE, WordPiece, char,
word), sentencepiece (BPE and unigram, trained through the library), and loaded files (Hugging Face
`tokenizer.json`, sentencepiece `.model`, GPT-2 `vocab.json` + `merges.txt`, tiktoken rank files)."""

from __future__ import annotations

import os
from typing import Sequence

from llm_jax.data.tokenizers.base import NATIVE_FILE, Tokenizer, TokenizerError, training_text
from llm_jax.data.tokenizers.bpe import ByteBPE
from llm_jax.data.tokenizers.external import HFTokenizer, SentencePieceTokenizer, train_sentencepiece
from llm_jax.data.tokenizers.wordpiece import CharTokenizer, WordPiece, WordTokenizer
from llm_jax.errors import StorageError, UserError, one_line
from llm_jax.fileio import os_error, read_json

KINDS = ("bytelevel_bpe", "sentencepiece_bpe", "sentencepiece_unigram", "wordpiece", "char", "word")
NATIVE = {cls.kind: cls for cls in (ByteBPE, WordPiece, CharTokenizer, WordTokenizer)}
FILENAMES = (NATIVE_FILE, "tokenizer.model", "tokenizer.json")

__all__ = ["Tokenizer", "TokenizerError", "KINDS", "load_tokenizer", "train_tokenizer", "ByteBPE", "WordPiece",
           "CharTokenizer", "WordTokenizer", "SentencePieceTokenizer", "HFTokenizer"]


def _load_native(path: str) -> Tokenizer:
    payload = read_json(path, "tokenizer file")
    kind = payload.get("kind")
    if kind not in NATIVE:
        raise TokenizerError(f"tokenizer file {path} has unknown kind {kind!r} (damaged, or not written by llm_jax?)")
    try:
        return ByteBPE.from_native(payload) if kind == ByteBPE.kind else NATIVE[kind](payload["vocab"])
    except (KeyError, TypeError, ValueError) as e:
        why = f"no {e.args[0]!r} field" if isinstance(e, KeyError) else one_line(e)
        raise TokenizerError(f"tokenizer file {path} is not a valid {kind} tokenizer: {why}") from e


def _find_tokenizer(path: str) -> str | tuple[str, str]:
    """The tokenizer file in directory `path` (or GPT-2's (vocab, merges) pair)."""
    for name in FILENAMES:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
        if os.path.isfile(os.path.join(path, vocab)) and os.path.isfile(os.path.join(path, merges)):
            return os.path.join(path, vocab), os.path.join(path, merges)
    ranks = sorted(f for f in os.listdir(path) if f.endswith(".tiktoken"))
    if ranks:
        return os.path.join(path, ranks[0])
    raise TokenizerError(f"{path!r} holds no tokenizer ({', '.join(FILENAMES)}, vocab.json + merges.txt, "
                         f"or *.tiktoken)")


def load_tokenizer(path: str) -> Tokenizer:
    """A tokenizer from a file, or from a directory holding one of FILENAMES, GPT-2's vocab.json +
    merges.txt (or encoder.json + vocab.bpe), or a *.tiktoken rank file. Any problem is one TokenizerError
    naming the file (a storage failure stays a StorageError)."""
    try:
        found = _find_tokenizer(path) if os.path.isdir(path) else path
        if isinstance(found, tuple):
            return ByteBPE.from_gpt2_files(*found)
        if not os.path.isfile(found):
            raise TokenizerError(f"tokenizer file {found!r} does not exist")
        if found.endswith(NATIVE_FILE):
            return _load_native(found)
        if found.endswith(".tiktoken"):
            return ByteBPE.from_tiktoken_file(found)
        if found.endswith(".json"):
            return HFTokenizer(found)
        return SentencePieceTokenizer(found)
    except (TokenizerError, StorageError):
        raise
    except UserError as e:  # fileio's messages already name the file
        raise TokenizerError(str(e)) from e
    except Exception as e:  # the libraries raise RuntimeError/OSError/ValueError/... for bad files
        raise TokenizerError(f"cannot load tokenizer {path!r}: {one_line(e)}") from e


def train_tokenizer(kind: str, docs: Sequence[str], vocab_size: int, directory: str, log=None) -> Tokenizer:
    """Trains a tokenizer of `kind` on `training_text(docs)` (a bounded sample, in bounded pieces) and saves it
    into `directory`; returns it loaded back."""
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise os_error(e, "create tokenizer directory", directory) from e
    text = training_text(docs)
    if kind.startswith("sentencepiece_"):
        path = os.path.join(directory, "tokenizer.model")
        train_sentencepiece(text, vocab_size, path, model_type=kind.split("_", 1)[1])
        return load_tokenizer(path)
    cls = NATIVE[kind]
    return load_tokenizer(cls.train(text, vocab_size, log=log).save(directory))
