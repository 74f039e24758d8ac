"""Checkpoint seals: `llm_jax_seal.json` lists every file of a checkpoint with its size and CRC-32, written
inside orbax's temporary directory just before the atomic rename that commits the checkpoint — so a committed
checkpoint is always sealed — and verified before any restore.

CRC-32 (zlib, stdlib) runs at about 4 GB/s on one core here and zlib releases the GIL, so sealing in orbax's
background thread does not hold up training and verifying at restore runs on several threads at once.
Seals of version 1 (sizes only, written before checksums existed) are still checked, by size.
"""

from __future__ import annotations

import concurrent.futures
import os
import zlib

from llm_jax import fileio

SEAL = "llm_jax_seal.json"
VERSION = 2
# orbax rewrites these after the commit (commit time, success marker); the first is checked to parse instead
REWRITTEN = ("_CHECKPOINT_METADATA", "commit_success.txt")
_BLOCK = 8 << 20


def file_crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc


def _files(step_dir: str) -> list[str]:
    found = (os.path.relpath(os.path.join(root, name), step_dir) for root, _, names in os.walk(step_dir)
             for name in names)
    return sorted(rel for rel in found if rel != SEAL and rel not in REWRITTEN)


def _threads() -> int:
    return min(8, os.cpu_count() or 1)


def seal(step_dir: str) -> dict:
    """Writes the seal of `step_dir` (every file: [size, crc32]); returns it."""
    files = _files(step_dir)
    with concurrent.futures.ThreadPoolExecutor(_threads()) as pool:
        crcs = list(pool.map(lambda rel: file_crc32(os.path.join(step_dir, rel)), files))
    record = {"version": VERSION, "files": {rel: [os.path.getsize(os.path.join(step_dir, rel)), crc]
                                            for rel, crc in zip(files, crcs)}}
    fileio.atomic_write_json(os.path.join(step_dir, SEAL), record)
    return record


def is_sealed(step_dir: str) -> bool:
    return os.path.isfile(os.path.join(step_dir, SEAL))


def problem(step_dir: str) -> str | None:
    """Why a sealed checkpoint is damaged (a file missing, resized or with other content, or an unparsable
    seal), or None when it is intact or has no seal (see `is_sealed`). A file that exists but cannot be read
    raises OSError: that may be the storage, not the checkpoint, and the caller retries."""
    path = os.path.join(step_dir, SEAL)
    if not os.path.isfile(path):
        return None
    try:
        record = fileio.read_json(path, "checkpoint seal")
        files = record["files"] if "version" in record else record.get("files", {})
    except (fileio.FileFormatError, KeyError) as e:
        return f"its seal is unreadable ({e})"
    expected = {}
    for rel, entry in (files.items() if isinstance(files, dict) else ()):
        if isinstance(entry, int):
            entry = (entry, None)
        if not (isinstance(rel, str) and isinstance(entry, (list, tuple)) and len(entry) == 2
                and all(isinstance(x, int) for x in entry if x is not None) and isinstance(entry[0], int)):
            return f"its seal is unreadable (entry {rel!r}: {entry!r})"
        expected[rel] = tuple(entry)
    if not isinstance(files, dict):
        return "its seal is unreadable (no file list)"
    for rel, (size, _) in sorted(expected.items()):
        if rel in REWRITTEN:
            continue
        full = os.path.join(step_dir, rel)
        if not os.path.isfile(full):
            return f"{rel} is missing"
        if os.path.getsize(full) != size:
            return f"{rel} has {os.path.getsize(full)} bytes, {size} when written"
    metadata = os.path.join(step_dir, REWRITTEN[0])
    if os.path.isfile(metadata):
        try:
            fileio.read_json(metadata, "orbax checkpoint metadata")
        except fileio.FileFormatError as e:
            return str(e)
    checked = sorted(rel for rel, (_, crc) in expected.items() if crc is not None and rel not in REWRITTEN)

    def mismatch(rel: str) -> str | None:  # an OSError propagates: unreadable is not the same as damaged
        crc = file_crc32(os.path.join(step_dir, rel))
        if crc == expected[rel][1]:
            return None
        return f"{rel} fails its checksum (crc32 {crc:08x}, {expected[rel][1]:08x} when written)"

    with concurrent.futures.ThreadPoolExecutor(_threads()) as pool:
        for found in pool.map(mismatch, checked):
            if found:
                return found
    return None
