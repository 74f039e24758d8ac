"""Tokenizers from other libraries behind the common interface: sentencepiece models (trained through the
library, or loaded) and Hugging Face `tokenizer.json` files."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Sequence

import sentencepiece as spm

from llm_jax.data.tokenizers.base import Tokenizer, TokenizerError


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, path: str):
        self.path = path
        self._sp = spm.SentencePieceProcessor(model_file=path)
        ids = {"bos": self._sp.bos_id(), "eos": self._sp.eos_id(), "pad": self._sp.pad_id(), "unk": self._sp.unk_id()}
        self.special = {role: i for role, i in ids.items() if i >= 0}

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size()

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


HF_SPECIAL = {
    "bos": ("<|begin_of_text|>", "<s>", "[BOS]", "<|endoftext|>"),
    "eos": ("<|end_of_text|>", "<|eot_id|>", "</s>", "[EOS]", "<|endoftext|>"),
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "unk": ("<unk>", "[UNK]"),
}


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` JSON file (what GPT-2 and Llama checkpoints ship)."""

    kind = "huggingface"

    def __init__(self, path: str):
        from tokenizers import Tokenizer as HFLibTokenizer
        self.path = path
        self._tok = HFLibTokenizer.from_file(path)
        self.special = {}
        for role, candidates in HF_SPECIAL.items():
            found = [i for i in map(self._tok.token_to_id, candidates) if i is not None]
            if found:
                self.special[role] = found[0]

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

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
        try:
            spm.SentencePieceTrainer.train(
                input=corpus, model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
                character_coverage=1.0, byte_fallback=True, normalization_rule_name="identity",
                remove_extra_whitespaces=False, add_dummy_prefix=False, user_defined_symbols=["\n"],
                split_digits=True, allow_whitespace_only_pieces=True, max_sentence_length=1 << 16,
                hard_vocab_limit=model_type != "unigram", num_threads=os.cpu_count() or 1, minloglevel=2,
                unk_id=0, bos_id=1, eos_id=2, pad_id=3)
        except RuntimeError as e:  # e.g. "Vocabulary size too high (512). Please set it to a value <= 299."
            raise TokenizerError(f"cannot train a {vocab_size}-piece sentencepiece {model_type} model on this "
                                 f"corpus: {str(e).split('] ')[-1]}") from e
        shutil.copyfile(prefix + ".model", out_path)
    return SentencePieceTokenizer(out_path)
