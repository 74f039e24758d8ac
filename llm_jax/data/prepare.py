"""`llm-jax data prepare`: raw inputs -> deduplicated, filtered, tokenized, shuffled shards + manifest.

Steps (each switchable under `data.*` in the config): read (sources.py) -> exact dedup -> near dedup
(MinHash + LSH) -> heuristic filters -> perplexity filter -> train/validation split by document hash ->
tokenizer (given, or trained on the train split) -> tokenization in worker processes -> a seeded shuffle of
documents -> shards. Everything is written to a temporary directory and renamed into place at the end, so an
existing output is never touched and an interrupted run leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time

import numpy as np

from llm_jax.data import corpus as corpus_lib
from llm_jax.data import dedup, filters
from llm_jax.data.shards import MANIFEST, token_dtype, write_shards
from llm_jax.data.sources import InputStats, SourceError, read_documents, source_hashes
from llm_jax.data.tokenizers import load_tokenizer, train_tokenizer

MANIFEST_VERSION = 1
PARALLEL_MIN_DOCS = 2000  # below this, worker start-up costs more than it saves
SHUFFLE_SEED = 0          # the document order in the shards; the loader reshuffles windows per epoch anyway


def load_inputs(inputs: list[str], data_cfg, stats: InputStats) -> list[str]:
    """Documents of `inputs`; the embedded corpus names are accepted as inputs too."""
    docs = []
    for item in inputs:
        if item in corpus_lib.EMBEDDED:
            embedded = corpus_lib.load_documents(item)
            stats["files"] += 1
            stats["documents_in"] += len(embedded)
            docs.extend(embedded)
        else:
            docs.extend(read_documents([item], stats, data_cfg.text_field, data_cfg.text_unit,
                                       data_cfg.tfds_dir or None))
    return docs


def _remove(docs: list[str], drop: np.ndarray) -> list[str]:
    return [d for d, gone in zip(docs, drop) if not gone]


def quality_filter(docs: list[str], f, log) -> tuple[list[str], dict[str, int]]:
    """Heuristic rules, then the perplexity filter; returns the kept documents and removals by reason."""
    reasons: dict[str, int] = {}
    kept = []
    for doc in docs:
        why = filters.heuristic_reason(doc, f)
        if why:
            reasons[why] = reasons.get(why, 0) + 1
        else:
            kept.append(doc)
    if f.perplexity_model and kept:
        log(f"data: scoring {len(kept)} documents by perplexity ({f.perplexity_model})")
        if f.perplexity_model == "ngram" and f.perplexity_reference:
            score = filters.CharNgram().fit(corpus_lib.load_documents(f.perplexity_reference)).perplexity
            scores = np.array([score(d) for d in kept])
        elif f.perplexity_model == "ngram":
            scores = filters.cross_fitted_perplexity(kept)
        else:
            score = filters.workdir_scorer(f.perplexity_model)
            scores = np.array([score(d) for d in kept])
        drop = filters.perplexity_mask(scores, f.max_perplexity, f.perplexity_quantile)
        reasons["perplexity"] = int(drop.sum())
        kept = _remove(kept, drop)
    return kept, reasons


_WORKER_TOKENIZER = None


def _worker_init(path: str) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = load_tokenizer(path)


def _worker_encode(docs: list[str]) -> list[list[int]]:
    return _WORKER_TOKENIZER.encode_batch(docs, threads=1)


def tokenize(docs: list[str], tokenizer_path: str, workers: int) -> list[np.ndarray]:
    """Token ids of each document followed by EOS, encoded by `workers` processes (spawned: no JAX state)."""
    tokenizer = load_tokenizer(tokenizer_path)
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(docs) >= PARALLEL_MIN_DOCS:
        chunk = max(1, len(docs) // (workers * 8))
        parts = [docs[i:i + chunk] for i in range(0, len(docs), chunk)]
        with multiprocessing.get_context("spawn").Pool(workers, _worker_init, (tokenizer_path,)) as pool:
            encoded = [ids for part in pool.map(_worker_encode, parts) for ids in part]
    else:
        encoded = tokenizer.encode_batch(docs)
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    return [np.asarray(ids + eos, np.int64) for ids in encoded]


def _tokenizer_file(tokenizer_dir: str) -> str:
    return next(f for f in sorted(os.listdir(tokenizer_dir)) if f.startswith("tokenizer."))


def select_documents(docs: list[str], data_cfg, counts: dict, log) -> list[str]:
    """Exact dedup, near dedup, then quality filters; records what each step removed in `counts`."""
    counts["exact_duplicates_removed"] = counts["near_duplicates_removed"] = 0
    if data_cfg.dedup.exact:
        drop = dedup.exact_duplicates(docs)
        counts["exact_duplicates_removed"] = int(drop.sum())
        docs = _remove(docs, drop)
    if data_cfg.dedup.near:
        d = data_cfg.dedup
        drop = dedup.MinHashLSH(d.bands, d.rows, d.shingle, d.threshold).duplicates(docs)
        counts["near_duplicates_removed"] = int(drop.sum())
        docs = _remove(docs, drop)
    docs, reasons = quality_filter(docs, data_cfg.filter, log)
    counts["filtered"], counts["filtered_by_reason"] = sum(reasons.values()), reasons
    if not docs:
        removed = {k: v for k, v in counts.items() if k != "input"}
        raise SourceError(f"every document was removed ({json.dumps(removed)}); relax data.dedup / data.filter")
    return docs


def write_splits(tmp: str, splits_docs: dict[str, list[str]], tokenizer_path: str, data_cfg,
                 seq_len: int | None) -> dict:
    """Tokenizes each split, shuffles its documents (seeded) and writes its shards; returns their summary."""
    tok = load_tokenizer(tokenizer_path)
    splits, rng = {}, np.random.default_rng(SHUFFLE_SEED)
    for split, split_docs in splits_docs.items():
        encoded = tokenize(split_docs, tokenizer_path, data_cfg.workers)
        encoded = [encoded[i] for i in rng.permutation(len(encoded))]
        shards = write_shards(tmp, split, encoded, min(data_cfg.shards, len(encoded)), token_dtype(tok.vocab_size))
        splits[split] = {"documents": len(encoded), "tokens": int(sum(len(e) for e in encoded)),
                         "characters": sum(map(len, split_docs)), "shards": shards}
        if seq_len:
            splits[split]["long_documents"] = int(sum(len(e) > seq_len + 1 for e in encoded))
    return splits


def prepare(inputs: list[str], output: str, data_cfg, vocab_size: int, seq_len: int | None = None,
            tokenizer: str = "", log=print) -> dict:
    """Prepares `inputs` into `output` (which must not exist yet); returns the manifest it wrote."""
    if os.path.exists(os.path.join(output, MANIFEST)):
        raise SourceError(f"{output!r} already holds prepared data; choose a new --output")
    if os.path.isdir(output) and os.listdir(output):
        raise SourceError(f"{output!r} exists and is not empty; choose a new --output")
    started = time.perf_counter()
    stats = InputStats()
    docs = load_inputs(inputs, data_cfg, stats)
    if not docs:
        raise SourceError(f"the inputs yielded no documents ({json.dumps(dict(stats), sort_keys=True)})")
    log(f"data: read {len(docs):,} documents from {stats['files']} input(s)")
    counts = {"documents_in": stats["documents_in"], "input": dict(stats)}
    docs = select_documents(docs, data_cfg, counts, log)
    train_docs, val_docs = corpus_lib.split_documents(docs, data_cfg.val_fraction)

    parent = os.path.dirname(os.path.abspath(output)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output)}.tmp-")
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would otherwise become the output's mode
    try:
        if tokenizer:
            tokenizer_path = load_tokenizer(tokenizer).save(tmp)
        else:
            log(f"data: training a {vocab_size}-token {data_cfg.tokenizer_kind} tokenizer on "
                f"{len(train_docs):,} documents")
            train_tokenizer(data_cfg.tokenizer_kind, train_docs, vocab_size, tmp)
            tokenizer_path = os.path.join(tmp, _tokenizer_file(tmp))
        tok = load_tokenizer(tokenizer_path)
        if tok.vocab_size > vocab_size:
            raise corpus_lib.CorpusError(f"the tokenizer has {tok.vocab_size} tokens but model.vocab_size="
                                         f"{vocab_size}; set model.vocab_size >= {tok.vocab_size}")
        tokenize_start = time.perf_counter()
        splits = write_splits(tmp, {"train": train_docs, "val": val_docs}, tokenizer_path, data_cfg, seq_len)
        tokenize_seconds = time.perf_counter() - tokenize_start
        counts["documents_out"] = len(docs)
        counts["tokens_out"] = splits["train"]["tokens"] + splits["val"]["tokens"]
        counts["long_documents"] = sum(s.get("long_documents", 0) for s in splits.values())
        train_tokens = np.concatenate([np.load(os.path.join(tmp, "train", s["file"] + ".tokens.npy"))
                                       for s in splits["train"]["shards"]])
        manifest = {
            "version": MANIFEST_VERSION, "counts": counts, "splits": splits,
            "tokenizer": {"file": os.path.basename(tokenizer_path), "kind": tok.kind, "vocab_size": tok.vocab_size,
                          "eos_id": tok.eos_id, "sha256": _sha256(tokenizer_path)},
            "sources": source_hashes([i for i in inputs if i not in corpus_lib.EMBEDDED]),
            "embedded_sources": [i for i in inputs if i in corpus_lib.EMBEDDED],
            "data_config": data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg),
            "unigram_entropy": unigram_entropy(train_tokens, tok.vocab_size),
            "seconds": {"total": time.perf_counter() - started, "tokenize_and_pack": tokenize_seconds},
        }
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        if os.path.isdir(output):
            os.rmdir(output)  # empty (checked above)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"data: {counts['documents_out']:,} documents, {counts['tokens_out']:,} tokens -> {output}")
    return manifest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """H = -sum p log p (nats) of the token frequencies: the loss of a model that ignores context."""
    counts = np.bincount(tokens.astype(np.int64), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
