"""Tokenizers from other libraries behind the common interface: sentencepiece models (trained through the
library, or loaded) and Hugging Face `tokenizer.json` files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Iterable, Sequence

import regex
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from llm_jax.data.tokenizers.base import TRAIN_PIECE_CHARS, Tokenizer, TokenizerError, bounded_pieces
from llm_jax.fileio import atomic_path, os_error

SP_MAX_SENTENCE_BYTES = 4 * TRAIN_PIECE_CHARS  # a piece of TRAIN_PIECE_CHARS characters fits at any UTF-8 width


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, path: str):
        self.path = path
        self._sp = spm.SentencePieceProcessor(model_file=path)
        ids = {"bos": self._sp.bos_id(), "eos": self._sp.eos_id(), "pad": self._sp.pad_id(), "unk": self._sp.unk_id()}
        self.special = {role: i for role, i in ids.items() if i >= 0}
        self.cut = _SP_CUT if _words_are_independent(self._sp.serialized_model_proto()) else None

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
            with atomic_path(dest) as tmp:
                shutil.copyfile(self.path, tmp)
        return dest


_SP_CUT = regex.compile(r"[^ ]( )")  # a space after a non-space starts a sentencepiece "word"


def _words_are_independent(model_proto: bytes) -> bool:
    """Whether no piece of the model spans a space that follows a non-space, and text reaches the pieces
    unchanged (identity normalisation, no dummy prefix, no whitespace folding): then sentencepiece's encoding
    of a text is the concatenation of its encodings of the text cut before such spaces (BPE merges and the
    unigram lattice cannot cross them). True for the models trained here."""
    try:
        from sentencepiece import sentencepiece_model_pb2  # needs protobuf (which grain and orbax require)
    except ImportError:
        return False
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(model_proto)
    norm, trainer = model.normalizer_spec, model.trainer_spec
    return (norm.name == "identity" and not norm.add_dummy_prefix and not norm.remove_extra_whitespaces
            and trainer.split_by_whitespace and not trainer.treat_whitespace_as_suffix
            and not any(c in p.piece.lstrip("\u2581 ") for p in model.pieces for c in "\u2581 "))


HF_SPECIAL = {
    "bos": ("<|begin_of_text|>", "<s>", "[BOS]", "<|endoftext|>"),
    "eos": ("<|end_of_text|>", "<|eot_id|>", "</s>", "[EOS]", "<|endoftext|>"),
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "unk": ("<unk>", "[UNK]"),
}


def _named_specials(config_path: str) -> dict[str, str]:
    """{role: token text} from a tokenizer_config.json beside tokenizer.json (transformers writes one; it names the
    model's own BOS / EOS, e.g. an instruct model's end-of-turn token), or {} without one."""
    if not os.path.isfile(config_path):
        return {}
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"{config_path} is not readable JSON: {e}") from e
    named = {}
    for role in HF_SPECIAL:
        token = config.get(f"{role}_token") if isinstance(config, dict) else None
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str):
            named[role] = token
    return named


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` JSON file (what GPT-2 and Llama checkpoints ship)."""

    kind = "huggingface"

    def __init__(self, path: str):
        from tokenizers import Tokenizer as HFLibTokenizer
        self.path = path
        self._tok = HFLibTokenizer.from_file(path)
        self.special = {}
        named = _named_specials(os.path.join(os.path.dirname(path), "tokenizer_config.json"))
        for role, candidates in HF_SPECIAL.items():
            candidates = ((named[role],) if role in named else ()) + candidates
            found = [i for i in map(self._tok.token_to_id, candidates) if i is not None]
            if found:
                self.special[role] = found[0]

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], threads: int = 0) -> list[list[int]]:
        if threads == 1:  # the library's batch call spreads over every core (Rayon) and takes no thread count
            return [self.encode(t) for t in texts]
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str) -> str:
        dest = os.path.join(directory, "tokenizer.json")
        if os.path.abspath(dest) != os.path.abspath(self.path):
            with atomic_path(dest) as tmp:
                shutil.copyfile(self.path, tmp)
            named = os.path.join(os.path.dirname(self.path), "tokenizer_config.json")
            if os.path.isfile(named):  # which tokens are BOS / EOS travels with the vocabulary
                with atomic_path(os.path.join(directory, "tokenizer_config.json")) as tmp:
                    shutil.copyfile(named, tmp)
        return dest


def train_sentencepiece(docs: Iterable[str], vocab_size: int, out_path: str,
                        model_type: str = "bpe") -> SentencePieceTokenizer:
    """Trains a lossless sentencepiece model: identity normalisation, no whitespace folding, no dummy
    prefix, a newline symbol and byte fallback, so decode(encode(text)) == text for any text. Every line is
    fed (cut by `bounded_pieces` into pieces that fit max_sentence_length: sentencepiece silently skips longer
    ones); bound the amount with `training_text`. Any failure is a TokenizerError saying why."""
    with tempfile.TemporaryDirectory() as tmp:
        corpus, sentences = os.path.join(tmp, "corpus.txt"), 0
        try:
            with open(corpus, "w", encoding="utf-8") as f:
                for d in docs:  # sentencepiece reads lines; newlines come back as the user-defined "\n" piece
                    for line in d.splitlines():
                        for piece in bounded_pieces(line, TRAIN_PIECE_CHARS):
                            if piece.strip():
                                f.write(piece + "\n")
                                sentences += 1
        except OSError as e:
            raise os_error(e, "write the sentencepiece training text to", corpus) from e
        if not sentences:
            raise TokenizerError("sentencepiece found no usable training text: every document is empty or blank")
        prefix = os.path.join(tmp, "sp")
        try:
            spm.SentencePieceTrainer.train(
                input=corpus, model_prefix=prefix, vocab_size=vocab_size, model_type=model_type,
                character_coverage=1.0, byte_fallback=True, normalization_rule_name="identity",
                remove_extra_whitespaces=False, add_dummy_prefix=False, user_defined_symbols=["\n"],
                split_digits=True, allow_whitespace_only_pieces=True, max_sentence_length=SP_MAX_SENTENCE_BYTES,
                hard_vocab_limit=model_type != "unigram", num_threads=os.cpu_count() or 1, minloglevel=2,
                unk_id=0, bos_id=1, eos_id=2, pad_id=3)
        except RuntimeError as e:  # e.g. "Vocabulary size too high (512). Please set it to a value <= 299."
            raise TokenizerError(f"cannot train a {vocab_size}-piece sentencepiece {model_type} model on this "
                                 f"corpus ({sentences:,} lines): {_sentencepiece_reason(e)}") from e
        with atomic_path(out_path) as dest, open(dest, "wb") as f:
            f.write(_without_run_details(prefix + ".model"))
    return SentencePieceTokenizer(out_path)


def _without_run_details(model_path: str) -> bytes:
    """The model's bytes without what the training run alone decided — the paths of its temporary input and output
    and the thread count — so the same text and settings give the same file (and manifest hash) on any machine."""
    model = sentencepiece_model_pb2.ModelProto()
    with open(model_path, "rb") as f:
        model.ParseFromString(f.read())
    for field in ("input", "model_prefix", "num_threads"):
        model.trainer_spec.ClearField(field)
    return model.SerializeToString(deterministic=True)


def _sentencepiece_reason(e: Exception) -> str:
    """The library's message without its source location ("INTERNAL: file.cc(467) [condition] message")."""
    text = str(e).strip()
    if "sentences_.empty()" in text:
        return "sentencepiece found no usable training text (every line was skipped)"
    return text.split("] ", 1)[-1].strip() or text or type(e).__name__
