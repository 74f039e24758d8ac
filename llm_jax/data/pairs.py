"""(input, target) pairs for the `seq2seq` objective: a JSON-lines file (`data.pairs`) of records
`{"input": "...", "target": "..."}` (`{"prompt": ..., "completion": ...}` is read too).

A line that is not a JSON object, or lacks a string input or target, is counted and skipped (never fatal); a
file with no usable pair is an error naming the file. Pairs are split into train / validation by a hash of the
pair (`data.val_fraction`, as documents are), identical pairs kept once. The tokenizer is `data.tokenizer` or
one of `data.tokenizer_kind` trained on the train pairs' text, cached under `data.cache_dir` by the file's
content and the tokenizer settings. A row is fixed-length: the encoder reads the input (`model.seq_len` ids,
padded, `encoder_padding` 1 on real ids) and the decoder produces the target followed by EOS
(`data.target_len` ids, 0 = model.seq_len; `weights` 1 on real ids). Longer inputs or targets are cut and
counted (`truncated_inputs`, `truncated_targets`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from llm_jax.data.corpus import CorpusError, split_documents
from llm_jax.data.sources import json_objects
from llm_jax.data.tokenizers import load_tokenizer, train_tokenizer
from llm_jax.fileio import os_error, read_bytes

FIELD_NAMES = (("input", "target"), ("prompt", "completion"))


def parse_pairs(raw: bytes, path: str) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(pairs, counts) of a pairs file's bytes: counts of lines read, skipped as not JSON, skipped for a
    missing or non-string field, and pairs kept."""
    records, counts = json_objects(raw)
    pairs, counts["missing_fields"] = [], 0
    for record in records:
        names = next((n for n in FIELD_NAMES if n[0] in record), FIELD_NAMES[0])
        source, target = record.get(names[0]), record.get(names[1])
        if not isinstance(source, str) or not isinstance(target, str) or not source.strip() or not target.strip():
            counts["missing_fields"] += 1
            continue
        pairs.append((source, target))
    if not pairs:
        raise CorpusError(f"data.pairs={path}: no usable pair in {counts['lines']} line(s) ({counts['not_json']} "
                          f"not JSON objects, {counts['missing_fields']} without string 'input' and 'target')")
    return pairs, counts


def split_pairs(pairs, val_fraction: float) -> tuple[list, list]:
    """Train / validation pairs by a hash of each pair (identical pairs kept once)."""
    keyed = {json.dumps(p): p for p in pairs}
    train, val = split_documents(list(keyed), val_fraction)
    return [keyed[k] for k in train], [keyed[k] for k in val]


class PairRows:
    """Row i = the i-th encoded pair as fixed-length arrays (see the module docstring)."""

    def __init__(self, encoded: list[tuple[list[int], list[int]]], source_len: int, target_len: int,
                 pad_id: int, eos_id: int):
        self.encoded, self.seq_len, self.target_len = encoded, source_len, target_len
        self.pad_id, self.eos_id = pad_id, eos_id
        self.truncated_inputs = sum(len(s) > source_len for s, _ in encoded)
        self.truncated_targets = sum(len(t) + 1 > target_len for _, t in encoded)

    def __len__(self) -> int:
        return len(self.encoded)

    def _padded(self, ids, length: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids[:length], np.int32)
        out = np.full(length, self.pad_id, np.int32)
        out[: ids.size] = ids
        return out, (np.arange(length) < ids.size)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        source, target = self.encoded[int(i)]
        inputs, real_inputs = self._padded(source, self.seq_len)
        targets, real_targets = self._padded(list(target) + [self.eos_id], self.target_len)
        return {"encoder_inputs": inputs, "encoder_padding": real_inputs.astype(np.int32),
                "decoder_targets": targets, "weights": real_targets.astype(np.float32)}


@dataclasses.dataclass
class PairData:
    tokenizer: object
    train: PairRows
    val: PairRows
    manifest: dict  # tokenizer, counts, split sizes and the targets' unigram entropy
    fingerprint: str


def _tokenizer(cfg, vocab_size: int, texts: list[str], content_sha: str, cache_dir: str, log):
    d = cfg.data
    if d.tokenizer:
        return load_tokenizer(d.tokenizer)
    key = hashlib.sha256(json.dumps([content_sha, d.tokenizer_kind, d.val_fraction, vocab_size]).encode())
    cache = os.path.join(cache_dir, "pairs", key.hexdigest()[:16])
    if not os.path.isdir(cache):
        log(f"data: training a {vocab_size}-token {d.tokenizer_kind} tokenizer on {len(texts):,} pair texts")
        try:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            tmp = tempfile.mkdtemp(dir=os.path.dirname(cache), prefix=".tmp-")
        except OSError as e:
            raise os_error(e, "create the tokenizer cache in", os.path.dirname(cache)) from e
        try:
            train_tokenizer(d.tokenizer_kind, texts, vocab_size, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.replace(tmp, cache)
        except OSError:  # another process cached the same tokenizer first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer(cache)


def _unigram_entropy(rows: PairRows, vocab_size: int) -> float:
    counts = np.zeros(vocab_size, np.int64)
    for _, target in rows.encoded:
        np.add.at(counts, np.asarray(list(target) + [rows.eos_id]), 1)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def load_pairs(cfg, vocab_size: int, cache_dir: str, log=print) -> PairData:
    """The run's pairs: read, split, tokenized (training the tokenizer into `cache_dir` on first use) and laid
    out as rows."""
    path = cfg.data.pairs
    raw = read_bytes(path, "pairs file (data.pairs)")
    pairs, counts = parse_pairs(raw, path)
    train, val = split_pairs(pairs, cfg.data.val_fraction)
    content_sha = hashlib.sha256(raw).hexdigest()
    tok = _tokenizer(cfg, vocab_size, [t for p in train for t in p], content_sha, cache_dir, log)
    if tok.vocab_size > vocab_size:
        raise CorpusError(f"data.tokenizer={cfg.data.tokenizer}: {tok.vocab_size} tokens, more than the "
                          f"{vocab_size} the model has room for")
    if tok.eos_id is None:
        raise CorpusError(f"the {tok.kind} tokenizer has no EOS id; seq2seq targets end with one")
    pad = tok.special.get("pad")
    pad = 0 if pad is None else pad

    def rows(split):
        encoded = [(tok.encode(s), tok.encode(t)) for s, t in split]
        return PairRows(encoded, cfg.model.seq_len, cfg.data.target_len or cfg.model.seq_len, pad, tok.eos_id)

    train_rows, val_rows = rows(train), rows(val)
    counts.update(pairs=len(pairs), train=len(train), val=len(val),
                  truncated_inputs=train_rows.truncated_inputs + val_rows.truncated_inputs,
                  truncated_targets=train_rows.truncated_targets + val_rows.truncated_targets)
    skipped = counts["not_json"] + counts["missing_fields"]
    cut = counts["truncated_inputs"] + counts["truncated_targets"]
    log(f"data: {len(train):,} train / {len(val):,} validation pairs from {path}"
        f"{f' ({skipped} bad line(s) skipped)' if skipped else ''}"
        f"{f'; {cut} input(s)/target(s) cut to model.seq_len / data.target_len' if cut else ''}")
    tok_key = [content_sha, cfg.data.tokenizer, tok.kind, tok.vocab_size]
    tok_sha = hashlib.sha256(json.dumps(tok_key).encode()).hexdigest()
    manifest = {"tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size, "sha256": tok_sha}, "counts": counts,
                "unigram_entropy": _unigram_entropy(train_rows, tok.vocab_size)}
    blob = json.dumps({"pairs": content_sha, "tokenizer": tok_sha, "seed": cfg.train.seed,
                       "lengths": [train_rows.seq_len, train_rows.target_len]})
    return PairData(tok, train_rows, val_rows, manifest, hashlib.sha256(blob.encode()).hexdigest()[:16])
