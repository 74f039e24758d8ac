"""`llm-jax data prepare`: raw inputs -> deduplicated, filtered, tokenized, shuffled shards + manifest.

Steps (each switchable under `data.*` in the config): read (sources.py) -> exact dedup -> near dedup
(MinHash + LSH) -> heuristic filters -> perplexity filter -> `data.clean` (language, quality classifier, toxicity,
PII redaction, repeated substrings: llm_jax/data/clean/) -> train/validation split by document hash ->
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

from llm_jax import fileio
from llm_jax.data import corpus as corpus_lib
from llm_jax.data import dedup, filters
from llm_jax.data.clean.apply import clean_documents
from llm_jax.data.clean.normalize import normalize_documents
from llm_jax.data.shards import MANIFEST, MANIFEST_VERSION, token_dtype, write_shards
from llm_jax.data.sources import InputStats, SourceError, read_documents
from llm_jax.data.tokenizers import Tokenizer, load_tokenizer, train_tokenizer
from llm_jax.fileio import atomic_write_json, check_new_output, fsync_dir, os_error, read_bytes

PARALLEL_MIN_DOCS = 2000  # below this, worker start-up costs more than it saves
ENCODE_BATCH_CHARS = 4_000_000  # documents encoded at once: bounds the Python lists of ids held before numpy
SHUFFLE_SEED = 0          # the document order in the shards; the loader reshuffles windows per epoch anyway
SKIPPED_INPUT_COUNTS = ("unreadable_files", "corrupt_archives", "binary_files", "bad_json_lines", "missing_field",
                        "invalid_unicode_documents", "non_utf8_documents")


def load_inputs(inputs: list[str], data_cfg, stats: InputStats) -> list[str]:
    """Documents of `inputs` (in `data.clean.normalize` form); the embedded corpus names are accepted as inputs
    too."""
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
    return list(normalize_documents(docs, data_cfg.clean.normalize, stats))


def _remove(docs: list[str], drop: np.ndarray) -> list[str]:
    return [d for d, gone in zip(docs, drop) if not gone]


def quality_filter(docs: list[str], f, log, workdir_scorer=None) -> tuple[list[str], dict[str, int]]:
    """Heuristic rules, then the perplexity filter; returns the kept documents and removals by reason.
    `workdir_scorer(path) -> (text -> perplexity)` scores with a trained model when `perplexity_model` names a work
    directory (the caller passes llm_jax.eval.perplexity.workdir_scorer: data preparation imports no model code)."""
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
            if workdir_scorer is None:
                raise SourceError(f"data.filter.perplexity_model={f.perplexity_model!r} scores with a trained model, "
                                  f"which this caller did not provide (run it through `llm-jax data prepare` or "
                                  f"`llm-jax train`)")
            score = workdir_scorer(f.perplexity_model)
            scores = np.array([score(d) for d in kept])
        drop = filters.perplexity_mask(scores, f.max_perplexity, f.perplexity_quantile)
        reasons["perplexity"] = int(drop.sum())
        kept = _remove(kept, drop)
    return kept, reasons


_WORKER_TOKENIZER = None


def _worker_init(path: str) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = load_tokenizer(path)


def _worker_encode(docs: list[str]) -> list[np.ndarray]:
    return _encode(_WORKER_TOKENIZER, docs, threads=1)


def _encode(tokenizer: Tokenizer, docs: list[str], threads: int = 0) -> list[np.ndarray]:
    """Token ids of each document followed by EOS, as arrays of the shards' dtype. Documents are encoded in
    batches of at most ENCODE_BATCH_CHARS characters, a longer one alone and a piece at a time
    (`Tokenizer.encode_long`): the lists of Python ints held at once are bounded, not the corpus's size."""
    dtype = token_dtype(tokenizer.vocab_size)
    eos = np.array([] if tokenizer.eos_id is None else [tokenizer.eos_id], dtype)
    out, start = [], 0
    while start < len(docs):
        end, chars = start, 0
        while end < len(docs) and chars + len(docs[end]) <= ENCODE_BATCH_CHARS:
            chars += len(docs[end])
            end += 1
        if end == start:  # one document longer than a batch
            pieces = [np.asarray(ids, dtype) for ids in tokenizer.encode_long(docs[start])]
            out.append(np.concatenate(pieces + [eos]))
            start += 1
        else:
            out.extend(np.concatenate([np.asarray(ids, dtype), eos])
                       for ids in tokenizer.encode_batch(docs[start:end], threads=threads))
            start = end
    return out


def tokenize(docs: list[str], tokenizer_path: str, workers: int) -> list[np.ndarray]:
    """Token ids of each document followed by EOS, encoded by `workers` processes (spawned: no JAX state)."""
    tokenizer = load_tokenizer(tokenizer_path)
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(docs) >= PARALLEL_MIN_DOCS:
        chunk = max(1, len(docs) // (workers * 8))
        parts = [docs[i:i + chunk] for i in range(0, len(docs), chunk)]
        with multiprocessing.get_context("spawn").Pool(workers, _worker_init, (tokenizer_path,)) as pool:
            return [ids for part in pool.imap(_worker_encode, parts) for ids in part]
    return _encode(tokenizer, docs)


def _tokenizer_file(tokenizer_dir: str) -> str:
    return next(f for f in sorted(os.listdir(tokenizer_dir)) if f.startswith("tokenizer."))


def select_documents(docs: list[str], data_cfg, counts: dict, log, workdir_scorer=None) -> list[str]:
    """Exact dedup, near dedup, quality filters, then the `data.clean` stage; records what each step removed in
    `counts`."""
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
    docs, reasons = quality_filter(docs, data_cfg.filter, log, workdir_scorer)
    counts["filtered"], counts["filtered_by_reason"] = sum(reasons.values()), reasons
    docs, counts["clean"] = clean_documents(docs, data_cfg.clean, log)
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


def _skipped_summary(stats: InputStats) -> str:
    skipped = [f"{stats[k]:,} {k.replace('_', ' ')}" for k in SKIPPED_INPUT_COUNTS if stats[k]]
    return f" (counted, not fatal: {', '.join(skipped)})" if skipped else ""


def _publish(tmp: str, output: str) -> None:
    """Renames the finished temporary directory onto `output` (absent or empty) and makes that durable."""
    try:
        if os.path.isdir(output):
            os.rmdir(output)  # empty (checked at the start); fails if something appeared meanwhile
        os.replace(tmp, output)
    except OSError as e:
        raise os_error(e, "move the prepared data into", output) from e
    fsync_dir(os.path.dirname(os.path.abspath(output)))


def prepare(inputs: list[str], output: str, data_cfg, vocab_size: int, seq_len: int | None = None,
            tokenizer: str = "", log=print, workdir_scorer=None) -> dict:
    """Prepares `inputs` into `output` (which must not exist yet, or be empty); returns the manifest it wrote.

    Checked before any input is read: the output can be created (fileio.check_new_output) and a given
    `tokenizer` loads. Inputs that cannot be read are counted in the manifest's `counts.input` (see
    sources.InputStats), never fatal; no document at all is a SourceError.
    """
    check_new_output(output, flag="--output")
    given = load_tokenizer(tokenizer) if tokenizer else None
    started = time.perf_counter()
    stats = InputStats()
    docs = load_inputs(inputs, data_cfg, stats)
    if not docs:
        raise SourceError(f"the inputs yielded no documents ({json.dumps(dict(stats), sort_keys=True)})")
    log(f"data: read {len(docs):,} documents from {stats['files']} input(s){_skipped_summary(stats)}")
    counts = {"documents_in": stats["documents_in"], "input": dict(stats)}
    docs = select_documents(docs, data_cfg, counts, log, workdir_scorer)
    train_docs, val_docs = corpus_lib.split_documents(docs, data_cfg.val_fraction)

    parent = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output)}.tmp-")
        os.chmod(tmp, 0o777 & ~fileio.UMASK)  # mkdtemp's 0700 would otherwise become the output's mode
    except OSError as e:
        raise os_error(e, "create a temporary directory in", parent) from e
    try:
        if given:
            tokenizer_path = given.save(tmp)
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
        train_tokens = [np.load(os.path.join(tmp, "train", s["file"] + ".tokens.npy"), mmap_mode="r")
                        for s in splits["train"]["shards"]]
        manifest = {
            "version": MANIFEST_VERSION, "counts": counts, "splits": splits,
            "tokenizer": tokenizer_entry(tok, tokenizer_path),
            "sources": stats.hashes,  # computed while reading: the bytes that were actually used
            "embedded_sources": [i for i in inputs if i in corpus_lib.EMBEDDED],
            "data_config": data_cfg.to_dict() if hasattr(data_cfg, "to_dict") else dict(data_cfg),
            "unigram_entropy": unigram_entropy(train_tokens, tok.vocab_size),
            "seconds": {"total": time.perf_counter() - started, "tokenize_and_pack": tokenize_seconds},
        }
        atomic_write_json(os.path.join(tmp, MANIFEST), manifest, indent=2, sort_keys=True)
        _publish(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"data: {counts['documents_out']:,} documents, {counts['tokens_out']:,} tokens -> {output}")
    return manifest


def tokenizer_entry(tok: Tokenizer, tokenizer_path: str) -> dict:
    """The manifest's `tokenizer` entry: its file, kind, size, EOS id and the sha256 of its bytes."""
    return {"file": os.path.basename(tokenizer_path), "kind": tok.kind, "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id, "sha256": hashlib.sha256(read_bytes(tokenizer_path)).hexdigest()}


def unigram_entropy(token_arrays, vocab_size: int, block: int = 1 << 24) -> float:
    """H = -sum p log p (nats) of the token frequencies (over all `token_arrays`): the loss of a model that
    ignores context. Counted a block at a time, so memory-mapped shards are never loaded whole."""
    counts = np.zeros(vocab_size, np.int64)
    for tokens in token_arrays:
        for start in range(0, len(tokens), block):
            counts += np.bincount(np.asarray(tokens[start:start + block], np.int64), minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
