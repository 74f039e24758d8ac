"""Tokenizers behind one interface (`base.Tokenizer`): kinds trained here (byte-level BPE, WordPiece, char,
word), sentencepiece (BPE and unigram, trained through the library), and loaded files (Hugging Face
`tokenizer.json`, sentencepiece `.model`, GPT-2 `vocab.json` + `merges.txt`, tiktoken rank files)."""

from __future__ import annotations

import json
import os

from llm_jax.data.tokenizers.base import NATIVE_FILE, Tokenizer, TokenizerError
from llm_jax.data.tokenizers.bpe import ByteBPE
from llm_jax.data.tokenizers.external import HFTokenizer, SentencePieceTokenizer, train_sentencepiece
from llm_jax.data.tokenizers.wordpiece import CharTokenizer, WordPiece, WordTokenizer

KINDS = ("bytelevel_bpe", "sentencepiece_bpe", "sentencepiece_unigram", "wordpiece", "char", "word")
NATIVE = {cls.kind: cls for cls in (ByteBPE, WordPiece, CharTokenizer, WordTokenizer)}
FILENAMES = (NATIVE_FILE, "tokenizer.model", "tokenizer.json")

__all__ = ["Tokenizer", "TokenizerError", "KINDS", "load_tokenizer", "train_tokenizer", "ByteBPE", "WordPiece",
           "CharTokenizer", "WordTokenizer", "SentencePieceTokenizer", "HFTokenizer"]


def _load_native(path: str) -> Tokenizer:
    with open(path, encoding="utf-8") as f:
        payload = json.load(f)
    kind = payload.get("kind")
    if kind == ByteBPE.kind:
        return ByteBPE.from_native(payload)
    if kind in NATIVE:
        return NATIVE[kind](payload["vocab"])
    raise TokenizerError(f"{path}: unknown tokenizer kind {kind!r}")


def load_tokenizer(path: str) -> Tokenizer:
    """A tokenizer from a file, or from a directory holding one of FILENAMES, GPT-2's vocab.json +
    merges.txt (or encoder.json + vocab.bpe), or a *.tiktoken rank file."""
    if os.path.isdir(path):
        for name in FILENAMES:
            if os.path.isfile(os.path.join(path, name)):
                return load_tokenizer(os.path.join(path, name))
        for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
            if os.path.isfile(os.path.join(path, vocab)) and os.path.isfile(os.path.join(path, merges)):
                return ByteBPE.from_gpt2_files(os.path.join(path, vocab), os.path.join(path, merges))
        ranks = sorted(f for f in os.listdir(path) if f.endswith(".tiktoken"))
        if ranks:
            return load_tokenizer(os.path.join(path, ranks[0]))
        raise TokenizerError(f"{path!r} holds no tokenizer ({', '.join(FILENAMES)}, vocab.json + merges.txt, "
                             f"or *.tiktoken)")
    if not os.path.isfile(path):
        raise TokenizerError(f"tokenizer file {path!r} does not exist")
    try:
        if path.endswith(NATIVE_FILE):
            return _load_native(path)
        if path.endswith(".tiktoken"):
            return ByteBPE.from_tiktoken_file(path)
        if path.endswith(".json"):
            return HFTokenizer(path)
        return SentencePieceTokenizer(path)
    except TokenizerError:
        raise
    except Exception as e:  # the libraries raise RuntimeError/OSError/ValueError/... for bad files
        raise TokenizerError(f"cannot load tokenizer {path!r}: {e}") from e


def train_tokenizer(kind: str, docs, vocab_size: int, directory: str, log=None) -> Tokenizer:
    """Trains a tokenizer of `kind` on `docs` and saves it into `directory`; returns it loaded back."""
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    os.makedirs(directory, exist_ok=True)
    if kind.startswith("sentencepiece_"):
        path = os.path.join(directory, "tokenizer.model")
        train_sentencepiece(docs, vocab_size, path, model_type=kind.split("_", 1)[1])
        return load_tokenizer(path)
    cls = NATIVE[kind]
    return load_tokenizer(cls.train(docs, vocab_size, log=log).save(directory))
