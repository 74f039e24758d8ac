"""Corpus -> tokenizer -> token streams for train and validation, cached on disk by content hash.

Documents are tokenized, each followed by the end-of-sequence token, and concatenated; the loader cuts the
stream into fixed-length windows (packing). The cache key covers the corpus content, the tokenizer
settings and the split, so a changed corpus or vocabulary never reuses stale tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from llm_jax.data import corpus as corpus_lib
from llm_jax.data.tokenizers import load_tokenizer, train_sentencepiece

CACHE_VERSION = 1


@dataclasses.dataclass
class PreparedData:
    tokenizer: object
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    stats: dict


def default_cache_dir() -> str:
    return os.environ.get("LLM_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "llm_jax")


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """H = -sum p log p (nats) of the token frequencies: the loss of a model that ignores context."""
    counts = np.bincount(tokens, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _tokenize(tokenizer, docs: list[str]) -> np.ndarray:
    eos = tokenizer.eos_id
    pieces = []
    for ids in tokenizer.encode_batch(docs):
        pieces.append(np.asarray(ids, dtype=np.int32))
        if eos is not None:
            pieces.append(np.asarray([eos], dtype=np.int32))
    return np.concatenate(pieces) if pieces else np.zeros((0,), np.int32)


def _cache_key(fingerprint: str, data_cfg, vocab_size: int) -> str:
    spec = {
        "version": CACHE_VERSION, "corpus": fingerprint, "vocab_size": vocab_size,
        "tokenizer": os.path.abspath(data_cfg.tokenizer) if data_cfg.tokenizer else "",
        "tokenizer_model": data_cfg.tokenizer_model, "val_fraction": data_cfg.val_fraction,
    }
    if data_cfg.tokenizer and os.path.isfile(data_cfg.tokenizer):
        with open(data_cfg.tokenizer, "rb") as f:
            spec["tokenizer_sha"] = hashlib.sha256(f.read()).hexdigest()
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _load_cached(path: str) -> PreparedData | None:
    meta_path = os.path.join(path, "meta.json")
    if not os.path.isfile(meta_path):
        return None
    with open(meta_path) as f:
        stats = json.load(f)
    tokenizer = load_tokenizer(os.path.join(path, stats["tokenizer_file"]))
    return PreparedData(tokenizer, np.load(os.path.join(path, "train.npy")),
                        np.load(os.path.join(path, "val.npy")), stats)


def prepare(data_cfg, vocab_size: int, log=print) -> PreparedData:
    """Tokenized train/validation streams for `data_cfg`, from the cache when it already holds them."""
    docs = corpus_lib.load_documents(data_cfg.corpus)
    cache_root = data_cfg.cache_dir or default_cache_dir()
    cached_dir = os.path.join(cache_root, "data", _cache_key(corpus_lib.fingerprint(docs), data_cfg, vocab_size))
    cached = _load_cached(cached_dir)
    if cached is not None:
        log(f"data: cached tokens from {cached_dir}")
        return cached

    train_docs, val_docs = corpus_lib.split_documents(docs, data_cfg.val_fraction)
    os.makedirs(os.path.join(cache_root, "data"), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.join(cache_root, "data"), prefix=".tmp-")
    try:
        if data_cfg.tokenizer:
            tokenizer = load_tokenizer(data_cfg.tokenizer)
            tokenizer_file = os.path.basename(tokenizer.save(tmp))
        else:
            log(f"data: training a {vocab_size}-piece sentencepiece {data_cfg.tokenizer_model} tokenizer "
                f"on {len(train_docs)} documents")
            train_sentencepiece(train_docs, vocab_size, os.path.join(tmp, "tokenizer.model"),
                                model_type=data_cfg.tokenizer_model)
            tokenizer_file = "tokenizer.model"
        tokenizer = load_tokenizer(os.path.join(tmp, tokenizer_file))
        if tokenizer.vocab_size > vocab_size:
            raise corpus_lib.CorpusError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size={vocab_size}; "
                f"set model.vocab_size >= {tokenizer.vocab_size}")
        log(f"data: tokenizing {len(docs)} documents ({sum(map(len, docs)):,} characters)")
        train_tokens, val_tokens = _tokenize(tokenizer, train_docs), _tokenize(tokenizer, val_docs)
        stats = {
            "tokenizer_file": tokenizer_file,
            "documents": {"train": len(train_docs), "val": len(val_docs)},
            "characters": {"train": sum(map(len, train_docs)), "val": sum(map(len, val_docs))},
            "tokens": {"train": int(train_tokens.size), "val": int(val_tokens.size)},
            "unigram_entropy": unigram_entropy(train_tokens, tokenizer.vocab_size),
            "chars_per_token": sum(map(len, train_docs)) / max(train_tokens.size, 1),
        }
        np.save(os.path.join(tmp, "train.npy"), train_tokens)
        np.save(os.path.join(tmp, "val.npy"), val_tokens)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(stats, f, indent=2)
        if os.path.isdir(cached_dir):  # a concurrent run finished first; keep its copy
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, cached_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load_cached(cached_dir)


def check_length(tokens: np.ndarray, seq_len: int, batch_size: int, split: str) -> None:
    windows = (tokens.size - 1) // seq_len
    if windows < 1:
        raise corpus_lib.CorpusError(
            f"the {split} split has {tokens.size} tokens, fewer than one sequence of model.seq_len={seq_len}")
    if split == "train" and windows < batch_size:
        raise corpus_lib.CorpusError(
            f"the train split has {windows} sequences of {seq_len} tokens, fewer than train.batch_size="
            f"{batch_size}; use a larger corpus or a smaller batch")


def epochs(tokens: np.ndarray, seq_len: int, total_tokens: int) -> float:
    return total_tokens / max(((tokens.size - 1) // seq_len) * seq_len, 1)


