"""Prepared data on disk: per split, shards of concatenated document tokens (numpy, memory-mapped) with the
offsets where each document starts, and a manifest.json describing the whole directory.

    DIR/manifest.json
    DIR/tokenizer.*                       the tokenizer the tokens were made with
    DIR/{train,val}/shard-00000.tokens.npy   uint16/uint32 token stream, EOS after every document
    DIR/{train,val}/shard-00000.docs.npy     int64 start offset of every document in the stream
"""

from __future__ import annotations

import json
import os

import numpy as np

MANIFEST = "manifest.json"
SPLITS = ("train", "val")


class PreparedDataError(ValueError):
    """A prepared-data directory is missing, incomplete or inconsistent."""


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def write_shards(directory: str, split: str, docs_tokens: list[np.ndarray], n_shards: int, dtype) -> list[dict]:
    """Writes documents (already shuffled) round-robin into `n_shards` shards; returns their descriptions."""
    os.makedirs(os.path.join(directory, split), exist_ok=True)
    shards = []
    for s in range(n_shards):
        mine = docs_tokens[s::n_shards]
        lengths = np.array([len(t) for t in mine], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(mine) else np.zeros(0, np.int64)
        stream = np.concatenate(mine).astype(dtype) if mine else np.zeros(0, dtype)
        base = os.path.join(directory, split, f"shard-{s:05d}")
        np.save(base + ".tokens.npy", stream)
        np.save(base + ".docs.npy", starts.astype(np.int64))
        shards.append({"file": os.path.basename(base), "documents": len(mine), "tokens": int(stream.size)})
    return shards


def read_manifest(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise PreparedDataError(f"{directory!r} holds no prepared data (no {MANIFEST}; run `llm-jax data prepare`)")
    with open(path) as f:
        return json.load(f)


class PreparedSplit:
    """One split of a prepared directory: memory-mapped shards, read-only."""

    def __init__(self, directory: str, split: str):
        self.directory, self.split = directory, split
        self.manifest = read_manifest(directory)
        self.tokens, self.doc_starts = [], []
        for shard in self.manifest["splits"][split]["shards"]:
            base = os.path.join(directory, split, shard["file"])
            try:
                tokens = np.load(base + ".tokens.npy", mmap_mode="r")
                starts = np.load(base + ".docs.npy", mmap_mode="r")
            except (OSError, ValueError) as e:
                raise PreparedDataError(f"{base}: unreadable shard ({e})") from e
            if tokens.size != shard["tokens"] or starts.size != shard["documents"]:
                raise PreparedDataError(f"{base}: has {tokens.size} tokens / {starts.size} documents, the manifest "
                                        f"says {shard['tokens']} / {shard['documents']} (truncated or replaced?)")
            self.tokens.append(tokens)
            self.doc_starts.append(starts)

    @property
    def num_tokens(self) -> int:
        return sum(t.size for t in self.tokens)

    def stream(self) -> np.ndarray:
        """All shards' tokens as one array (copied into memory)."""
        return np.concatenate([np.asarray(t) for t in self.tokens]) if self.tokens else np.zeros(0, np.int32)
