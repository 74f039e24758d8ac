"""A vector index of chunk embeddings on faiss (faiss-cpu), saved as a directory.

Kinds: "flat" — exact inner-product search over every vector (`IndexFlatIP`; with unit vectors, cosine
similarity); "hnsw" — approximate search on a hierarchical navigable small-world graph (`IndexHNSWFlat`, inner
product, M neighbours per node, efConstruction / efSearch candidate lists; built on one thread, so the same
vectors give the same graph). faiss rather than usearch: one wheel whose only dependencies (numpy, packaging) the
project already pins, exact and HNSW search behind one interface, and Meta's long-maintained reference library
for both; usearch's 2.26 wheel pulls a further native package (numkong).

A saved index is a directory: `vectors.faiss` (faiss's own format) and `index.json`, written last, with the
chunks (text, source id, title, word span), the settings it was built with and the identity of the embedding
model (`embed.Embedder.identity`). `check` refuses a query embedder whose identity differs: vectors of two models
live in unrelated spaces, and a search across them returns noise without any error.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from llm_jax.errors import UserError
from llm_jax.fileio import atomic_path, atomic_write_json, check_new_output, read_json
from llm_jax.rag.chunk import Chunk

KINDS = ("flat", "hnsw")
POOLINGS = ("mean", "last")  # how embed.py pools hidden states (part of the identity an index records)
FORMAT = 1
VECTORS_FILE, META_FILE = "vectors.faiss", "index.json"
SAME_MODEL_KEYS = ("family", "params_sha256", "pooling", "dim", "max_tokens")  # the workdir's path may change


class RagIndexError(UserError):
    """The index cannot be built, read or used as asked."""


def _faiss():
    try:
        import faiss
    except ImportError:
        raise RagIndexError("the vector index needs faiss: pip install -e '.[rag]' (faiss-cpu)") from None
    return faiss


@dataclasses.dataclass
class Index:
    kind: str
    embedder: dict          # the embedding model's identity
    settings: dict          # how the corpus was chunked and the index built
    chunks: list[Chunk]
    vectors: object         # the faiss index

    def search(self, queries_QD: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Per query, up to `k` (chunk number, inner product) pairs, best first."""
        if k < 1:
            raise RagIndexError(f"--k {k}: retrieve at least one chunk")
        k = min(k, len(self.chunks))
        if self.kind == "hnsw":
            self.vectors.hnsw.efSearch = max(int(self.settings["ef_search"]), k)
        scores_QK, ids_QK = self.vectors.search(np.ascontiguousarray(queries_QD, np.float32), k)
        return [[(int(i), float(s)) for i, s in zip(ids, scores) if i >= 0] for ids, scores in zip(ids_QK, scores_QK)]

    def check(self, identity: dict, where: str = "the index") -> None:
        """A RagIndexError unless `identity` is the model the index's vectors came from."""
        differ = [k for k in SAME_MODEL_KEYS if self.embedder.get(k) != identity.get(k)]
        if differ:
            theirs = ", ".join(f"{k}={self.embedder.get(k)!r}" for k in differ)
            ours = ", ".join(f"{k}={identity.get(k)!r}" for k in differ)
            raise RagIndexError(f"{where} was built with the embeddings of another model ({self.embedder['workdir']}: "
                                f"{theirs}); the query embedder {identity['workdir']} has {ours}. Embed queries "
                                f"with the index's model (--embedder) or rebuild the index with this one")

    def save(self, directory: str) -> None:
        """Writes the index into `directory` (new or empty); index.json last, so a directory with one is whole."""
        check_new_output(directory, flag="--out", error=RagIndexError)
        os.makedirs(directory, exist_ok=True)
        with atomic_path(os.path.join(directory, VECTORS_FILE)) as tmp:
            _faiss().write_index(self.vectors, tmp)
        atomic_write_json(os.path.join(directory, META_FILE), {
            "format": FORMAT, "kind": self.kind, "embedder": self.embedder, "settings": self.settings,
            "chunks": [c.to_json() for c in self.chunks]}, indent=1)


def build(vectors_ND: np.ndarray, chunks: list[Chunk], embedder: dict, kind: str = "flat", settings=None, *,
          hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 64) -> Index:
    """An index of `vectors_ND` (N, D), one row per chunk, from the model whose identity is `embedder`."""
    faiss = _faiss()
    if kind not in KINDS:
        raise RagIndexError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    N, D = vectors_ND.shape
    if N != len(chunks) or N == 0:
        raise RagIndexError(f"{N} vectors for {len(chunks)} chunks: need one vector per chunk, and some chunks")
    if D != embedder["dim"]:
        raise RagIndexError(f"vectors of {D} dimensions from an embedder of {embedder['dim']}")
    settings = dict(settings or {})
    if kind == "flat":
        index = faiss.IndexFlatIP(D)
    else:
        index = faiss.IndexHNSWFlat(D, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        settings.update(hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # HNSW insertion order on several threads varies from run to run
    try:
        index.add(np.ascontiguousarray(vectors_ND, np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    return Index(kind, dict(embedder), settings, list(chunks), index)


def load(directory: str) -> Index:
    """The index saved in `directory`, or one RagIndexError naming what is wrong with it."""
    meta_path, vectors_path = os.path.join(directory, META_FILE), os.path.join(directory, VECTORS_FILE)
    if not os.path.isfile(meta_path):
        raise RagIndexError(f"--index {directory!r} is not an index: it has no {META_FILE} (build one with "
                            f"`llm-jax rag index`)")
    meta = read_json(meta_path, "index file")
    if meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
        raise RagIndexError(f"{meta_path}: format {meta.get('format')!r} / kind {meta.get('kind')!r} is not an "
                            f"index this version reads (format {FORMAT}, kinds {', '.join(KINDS)})")
    try:
        chunks = [Chunk(**c) for c in meta["chunks"]]
        embedder, settings = dict(meta["embedder"]), dict(meta["settings"])
    except (KeyError, TypeError) as e:
        raise RagIndexError(f"{meta_path} is damaged: {e}") from None
    if not os.path.isfile(vectors_path):
        raise RagIndexError(f"--index {directory!r} has no {VECTORS_FILE}")
    try:
        vectors = _faiss().read_index(vectors_path)
    except RuntimeError as e:
        raise RagIndexError(f"{vectors_path} is not a readable faiss index: {str(e).splitlines()[0]}") from None
    if vectors.ntotal != len(chunks) or vectors.d != embedder.get("dim"):
        raise RagIndexError(f"{directory}: {vectors.ntotal} vectors of {vectors.d} dimensions for {len(chunks)} "
                            f"chunks of a {embedder.get('dim')}-dimensional embedder (files from two indexes?)")
    return Index(meta["kind"], embedder, settings, chunks, vectors)
