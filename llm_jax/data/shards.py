"""Prepared data on disk: per split, shards of concatenated document tokens (numpy, memory-mapped) with the
offsets where each document starts, and a manifest.json describing the whole directory.

    DIR/manifest.json
    DIR/tokenizer.*                       the tokenizer the tokens were made with
    DIR/{train,val}/shard-00000.tokens.npy   uint16/uint32 token stream, EOS after every document
    DIR/{train,val}/shard-00000.docs.npy     int64 start offset of every document in the stream

Every file is written atomically (fileio.atomic_path); reading a damaged one is one PreparedDataError naming
the file and what is wrong with it.
"""

from __future__ import annotations

import os

import numpy as np

from llm_jax.errors import UserError
from llm_jax.fileio import atomic_path, read_json

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
SPLITS = ("train", "val")


class PreparedDataError(UserError):
    """A prepared-data directory is missing, incomplete or inconsistent."""


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def save_array(path: str, array: np.ndarray) -> None:
    """np.save, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def write_shards(directory: str, split: str, docs_tokens: list[np.ndarray], n_shards: int, dtype) -> list[dict]:
    """Writes documents (already shuffled) round-robin into `n_shards` shards; returns their descriptions."""
    os.makedirs(os.path.join(directory, split), exist_ok=True)
    shards = []
    for s in range(n_shards):
        mine = docs_tokens[s::n_shards]
        lengths = np.array([len(t) for t in mine], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(mine) else np.zeros(0, np.int64)
        stream = np.concatenate(mine).astype(dtype, copy=False) if mine else np.zeros(0, dtype)
        base = os.path.join(directory, split, f"shard-{s:05d}")
        save_array(base + ".tokens.npy", stream)
        save_array(base + ".docs.npy", starts.astype(np.int64))
        shards.append({"file": os.path.basename(base), "documents": len(mine), "tokens": int(stream.size)})
    return shards


def _manifest_problem(manifest: dict) -> str | None:
    """What is missing from a manifest that readers rely on, or None."""
    if manifest.get("version") != MANIFEST_VERSION:
        return f"version {manifest.get('version')!r}, this llm_jax reads version {MANIFEST_VERSION}"
    tokenizer = manifest.get("tokenizer")
    if not isinstance(tokenizer, dict) or not {"file", "sha256", "vocab_size"} <= set(tokenizer):
        return "no tokenizer entry with file, sha256 and vocab_size"
    if not isinstance(manifest.get("unigram_entropy"), (int, float)):
        return "no unigram_entropy"
    splits = manifest.get("splits") if isinstance(manifest.get("splits"), dict) else {}
    for split in SPLITS:
        entry = splits.get(split) if isinstance(splits.get(split), dict) else {}
        shards = entry.get("shards")
        if not isinstance(entry.get("tokens"), int) or not isinstance(shards, list) or not all(
                isinstance(s, dict) and isinstance(s.get("file"), str) and isinstance(s.get("tokens"), int)
                and isinstance(s.get("documents"), int) for s in shards):
            return f"no valid {split} split (its tokens and a list of shards, each with file, tokens, documents)"
    return None


def read_manifest(directory: str) -> dict:
    """The manifest of a prepared directory, checked for what the loaders use; PreparedDataError otherwise."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise PreparedDataError(f"{directory!r} holds no prepared data (no {MANIFEST}; run `llm-jax data prepare`)")
    try:
        manifest = read_json(path, "prepared-data manifest")
    except UserError as e:  # a storage failure (StorageError) stays what it is
        raise PreparedDataError(str(e)) from e
    problem = _manifest_problem(manifest)
    if problem:
        raise PreparedDataError(f"prepared-data manifest {path} has {problem} (damaged? prepare it again)")
    return manifest


def _load_shard_array(path: str, what: str) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as e:
        raise PreparedDataError(f"{path}: unreadable {what} ({e or type(e).__name__})") from e
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise PreparedDataError(f"{path}: holds a {array.dtype} array of shape {array.shape}, expected a 1-D "
                                f"integer array of {what}")
    return array


class PreparedSplit:
    """One split of a prepared directory: memory-mapped shards, read-only."""

    def __init__(self, directory: str, split: str):
        self.directory, self.split = directory, split
        self.manifest = read_manifest(directory)
        self.tokens, self.doc_starts = [], []
        for shard in self.manifest["splits"][split]["shards"]:
            base = os.path.join(directory, split, shard["file"])
            tokens = _load_shard_array(base + ".tokens.npy", "token ids")
            starts = _load_shard_array(base + ".docs.npy", "document offsets")
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
