"""A corpus as documents (id, title, text) and documents as overlapping word windows (chunks).

A word is a run of non-space characters. Chunks of a document start every `words - overlap` words, hold `words`
words (the last one: what remains), and each keeps the document's own text between its first and last word, so
line breaks survive (a play's speaker names head their speeches). Consecutive chunks of a document share exactly
`overlap` words; dropping the first `overlap` words of every chunk but the first gives back the document's words
once each, in order. Everything is deterministic: documents come in sorted order and chunks in document order.

Corpora (`read_corpus`): "shakespeare" (the embedded plays, one document per scene, titled "PLAY, ACT, SCENE"),
a directory (every *.txt / *.md file below it, id its relative path, title its first non-empty line), a *.jsonl
file (objects with "text" and optional "id" / "title"), or one text file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from llm_jax.errors import UserError

WORD = re.compile(r"\S+")
TEXT_SUFFIXES = (".txt", ".md")
TITLE_CHARS = 120


class CorpusError(UserError):
    """The corpus cannot be read or split as asked."""


@dataclasses.dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclasses.dataclass(frozen=True)
class Chunk:
    source: str    # the document's id
    title: str     # the document's title
    text: str
    start: int     # index of the first word in the document
    end: int       # one past the last word

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def chunk_document(doc: Document, words: int = 120, overlap: int = 30) -> list[Chunk]:
    """The chunks of one document (none for a document without words); see the module docstring."""
    if words < 1 or not 0 <= overlap < words:
        raise CorpusError(f"chunks of {words} words with an overlap of {overlap}: need words >= 1 and "
                          f"0 <= overlap < words")
    spans = [m.span() for m in WORD.finditer(doc.text)]
    stride, out, start = words - overlap, [], 0
    while start < len(spans):
        end = min(start + words, len(spans))
        out.append(Chunk(doc.id, doc.title, doc.text[spans[start][0]:spans[end - 1][1]], start, end))
        if end == len(spans):
            break
        start += stride
    return out


def chunk_corpus(docs: list[Document], words: int = 120, overlap: int = 30) -> list[Chunk]:
    """Every document's chunks, in document order; a CorpusError if no document has a word."""
    chunks = [c for doc in docs for c in chunk_document(doc, words, overlap)]
    if not chunks:
        raise CorpusError("the corpus has no words to index")
    return chunks


def _title(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line[:TITLE_CHARS]


def shakespeare_documents() -> list[Document]:
    """The embedded plays, one document per scene: id "shakespeare/NNN", title "PLAY, ACT, SCENE"."""
    from llm_jax.data.corpus import shakespeare_scenes
    docs = []
    for i, scene in enumerate(shakespeare_scenes()):
        play, act, where = (scene.splitlines() + ["", "", ""])[:3]
        docs.append(Document(f"shakespeare/{i:03d}", f"{play}, {act}, {where.split('.')[0]}", scene))
    return docs


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror or e}") from None


def _jsonl(path: str) -> list[Document]:
    docs = []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path} line {n} is not JSON: {e.msg}") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise CorpusError(f"{path} line {n} has no string \"text\" field")
        docs.append(Document(str(row.get("id", f"{os.path.basename(path)}:{n}")),
                             str(row.get("title") or _title(row["text"])), row["text"]))
    return docs


def read_corpus(spec: str) -> list[Document]:
    """The documents of `spec` (see the module docstring), in a fixed order; one CorpusError if there are none."""
    if spec == "shakespeare":
        docs = shakespeare_documents()
    elif os.path.isdir(spec):
        paths = sorted(os.path.join(root, name) for root, _, files in os.walk(spec)
                       for name in files if name.endswith(TEXT_SUFFIXES))
        docs = [Document(os.path.relpath(p, spec), _title(text), text) for p in paths for text in [_read_text(p)]]
    elif os.path.isfile(spec):
        if spec.endswith(".jsonl"):
            docs = _jsonl(spec)
        else:
            text = _read_text(spec)
            docs = [Document(os.path.basename(spec), _title(text), text)]
    else:
        raise CorpusError(f"--input {spec!r}: no such file or directory (or give 'shakespeare', the embedded plays)")
    if not docs:
        raise CorpusError(f"--input {spec!r} holds no documents (*.txt / *.md files, JSONL rows or text)")
    seen = set()
    for d in docs:
        if d.id in seen:
            raise CorpusError(f"--input {spec!r}: two documents have the id {d.id!r}")
        seen.add(d.id)
    return docs
