"""`llm-jax tokenizer report`: the guide's compression ratio (characters per token) of every tokenizer kind,
trained on the same documents and measured on held-out ones, side by side."""

from __future__ import annotations

import os
import tempfile
import time

from llm_jax.data.corpus import load_documents, split_documents
from llm_jax.data.tokenizers import KINDS, load_tokenizer, train_tokenizer

REFERENCE = "tokenizers_bpe"  # Hugging Face `tokenizers`' byte-level BPE trainer, as the yardstick


def _reference_bpe(train_docs, vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(train_docs, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return lambda text: len(tok.encode(text).ids)


def _measure(tok, text: str) -> dict:
    """Compression, and whether the tokenizer is lossless: exact round trip and share of unknown tokens."""
    ids = tok.encode(text)
    unk = tok.unk_id
    return {"chars_per_token": len(text) / len(ids), "tokens": len(ids), "vocab_size": tok.vocab_size,
            "lossless": tok.decode(ids) == text,
            "unk_fraction": (sum(1 for i in ids if i == unk) / len(ids)) if unk is not None else 0.0}


def compression_report(corpus: str, vocab_size: int, kinds=KINDS, tokenizers=(), val_fraction: float = 0.05,
                       log=print) -> dict:
    """{name: {chars_per_token, tokens, vocab_size, train_seconds}} on the held-out documents of `corpus`."""
    train_docs, val_docs = split_documents(load_documents(corpus), val_fraction)
    val_text = "".join(val_docs)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            start = time.perf_counter()
            tok = train_tokenizer(kind, train_docs, vocab_size, os.path.join(tmp, kind))
            seconds = time.perf_counter() - start
            rows[kind] = dict(_measure(tok, val_text), train_seconds=seconds)
            n = rows[kind]["tokens"]
            log(f"tokenizer report: {kind:<22} {len(val_text) / n:6.3f} chars/token ({seconds:.1f}s to train)")
        start = time.perf_counter()
        count = _reference_bpe(train_docs, vocab_size)
        seconds = time.perf_counter() - start
        n = count(val_text)
        rows[REFERENCE] = {"chars_per_token": len(val_text) / n, "tokens": n, "vocab_size": vocab_size,
                           "train_seconds": seconds, "lossless": True, "unk_fraction": 0.0}
    for path in tokenizers:
        rows[path] = _measure(load_tokenizer(path), val_text)
    return {"corpus": corpus, "vocab_size": vocab_size, "val_characters": len(val_text), "tokenizers": rows}


def format_table(report: dict) -> str:
    lines = [f"compression on {report['val_characters']:,} held-out characters of {report['corpus']} "
             f"(vocabulary {report['vocab_size']}):",
             f"{'tokenizer':<24} {'chars/token':>11} {'tokens':>10} {'vocab':>7} {'lossless':>8} {'unk':>7}"]
    for name, row in sorted(report["tokenizers"].items(), key=lambda kv: -kv[1]["chars_per_token"]):
        lines.append(f"{name:<24} {row['chars_per_token']:>11.3f} {row['tokens']:>10,} {row['vocab_size']:>7} "
                     f"{'yes' if row['lossless'] else 'no':>8} {100 * row['unk_fraction']:>6.2f}%")
    return "\n".join(lines)
