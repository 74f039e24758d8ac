"""What the workers of the Beam pipeline do to one unit or one partition, as plain functions over files in the work
directory (llm_jax/data/beam/pipeline.py wires them into Beam transforms).

Per unit (`Work.unit(u)` prefix):
    .json          statistics of reading and the per-document verdicts; written last: the unit's "done" mark
    .sig.npy       (n, bands*rows) uint32 MinHash signatures
    .exact / .band / .windows   the unit's rows for the shuffles, grouped by partition (save_partitioned)
    .reason.npy    (n,) int8 index into REASONS            .lang.npy (n,) int16 index into the json's `languages`
    .pii.npy       (n, len(pii.KINDS)) int32               .texts.jsonl  [ordinal, text] of documents kept so far
    .dedup.npy     (n,) int8 0 kept / 1 exact / 2 near duplicate (after the dedup shuffles)
    .marks.npy     (m, 2) uint64 (id, word position) of windows repeated from an earlier document (substring)
    .{split}.tokens.npy / .lengths.npy / .shards.npy   tokens of the unit's final documents, grouped by output shard
    .final.json    counts of the unit's final documents (the finalize stage's done mark)
Per partition p (`Work.part(name, p)`): pairs (band partition p's verified LSH pairs, both ways, grouped by node
partition), edges / labels{r} / messages{r} (node partition p of the near-duplicate graph in propagation round r),
exact / near (duplicate ids grouped by unit), marks (the substring stage's marks grouped by unit).
Every file is written atomically, so a killed worker leaves a unit either done or to be redone.

The shuffles go through these files, not through the runner: a unit writes its rows grouped by partition, a
partition's worker reads its slice of every unit's file (load_partition). The runner moves only unit and partition
numbers and the labels still unequal after label propagation (usually none), so a worker holds one unit or one
partition at a time —
the DirectRunner would otherwise keep every shuffled row in the driver and hand each worker its whole share of a
stage at once, and both would grow with the corpus (docs/data.md "Memory").
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import tempfile

import numpy as np

from llm_jax.data import dedup, filters
from llm_jax.data.beam import keys, store
from llm_jax.data.beam.units import Unit, read_unit
from llm_jax.data.clean import pii
from llm_jax.data.clean.apply import DocumentCleaner
from llm_jax.data.clean.normalize import normalize_documents
from llm_jax.data.clean.substring import cut_words, mix, repeat_mask, spans, text_words, window_hashes
from llm_jax.data.shards import write_array_record_shard, write_npy_stream
from llm_jax.data.sources import InputStats

HEURISTIC = ("too_short", "too_long", "too_few_words", "low_alpha_fraction", "repeated_lines")
REASONS = ("",) + HEURISTIC + DocumentCleaner.REASONS
KEPT, EXACT, NEAR = 0, 1, 2


class Work:
    """Paths of the work directory: local, or remote (gs://...) for the workers of a cluster (store.py)."""

    def __init__(self, root: str):
        self.root = root
        for sub in ("units", "shards", "parts"):
            store.makedirs(store.join(root, sub))

    def unit(self, u: int, suffix: str) -> str:
        return store.join(self.root, "units", f"u-{u:06d}{suffix}")

    def shard(self, split: str, s: int) -> str:
        return store.join(self.root, "shards", f"{split}-{s:05d}.json")

    def part(self, name: str, p: int) -> str:
        return store.join(self.root, "parts", f"{name}-{p:05d}")


def save_partitioned(path: str, rows: np.ndarray, hashes: np.ndarray, partitions: int) -> None:
    """`rows` grouped by partition (`hashes % partitions`, stable) into `path`.rows.npy and the (partitions + 1,)
    row offsets of the groups into `path`.bounds.npy, written last (its presence marks the pair complete)."""
    part = keys.partition_of(hashes, partitions)
    order = np.argsort(part, kind="stable")
    store.save(path + ".rows.npy", rows[order])
    store.save(path + ".bounds.npy", np.searchsorted(part[order], np.arange(partitions + 1)).astype(np.int64))


def is_saved(path: str) -> bool:
    return store.exists(path + ".bounds.npy")


def load_partition(paths: list[str], p: int, width: int) -> np.ndarray:
    """Partition p's rows of every file in `paths` (save_partitioned), concatenated in the order of `paths`; each
    slice of a file is read alone, straight into its place in the result."""
    slices = []
    for path in paths:
        bounds = store.load(path + ".bounds.npy")
        if bounds[p + 1] > bounds[p]:
            slices.append((path + ".rows.npy", int(bounds[p]), int(bounds[p + 1])))
    return store.load_slices(slices) if slices else np.zeros((0, width), np.uint64)


def _texts(path: str) -> dict[int, str]:
    with store.open_read(path) as f:
        return {o: t for o, t in map(json.loads, f)}


def map_unit(unit: Unit, data_cfg, work: Work, lsh: dedup.MinHashLSH, partitions: int) -> int:
    """Reads a unit and decides everything that needs only the document: keys, signatures, verdicts, PII
    redaction; writes its dedup keys by partition. Skipped when the unit is done already (resume). Returns the unit's
    index."""
    done = work.unit(unit.index, ".json")
    if store.exists(done):
        return unit.index
    stats = InputStats()
    docs = list(normalize_documents(read_unit(unit, data_cfg, stats), data_cfg.clean.normalize, stats))
    cleaner = DocumentCleaner(data_cfg.clean)
    n = len(docs)
    exact = np.zeros((n, 2), np.uint64)
    for i, doc in enumerate(docs):
        exact[i] = np.frombuffer(dedup.exact_key(doc), np.uint64)
    sig = lsh.signatures(docs) if data_cfg.dedup.near else np.zeros((n, 0), np.uint32)
    reason, lang = np.zeros(n, np.int8), np.zeros(n, np.int16)
    found = np.zeros((n, len(pii.KINDS)), np.int32)
    languages: list[str] = [""]
    with store.writing(work.unit(unit.index, ".texts.jsonl")) as out:
        for i, doc in enumerate(docs):
            why = filters.heuristic_reason(doc, data_cfg.filter)
            code = ""
            if why is None:
                why, code = cleaner.verdict(doc)
            if code not in languages:
                languages.append(code)
            reason[i], lang[i] = REASONS.index(why or ""), languages.index(code)
            if why is None:
                text, per_kind = cleaner.redact(doc)
                found[i] = [per_kind.get(k, 0) for k in pii.KINDS]
                out.write((json.dumps([i, text]) + "\n").encode("utf-8"))
    for suffix, array in ((".sig.npy", sig), (".reason.npy", reason), (".lang.npy", lang), (".pii.npy", found)):
        store.save(work.unit(unit.index, suffix), array)
    _save_keys(unit.index, exact, sig, data_cfg, work, partitions)
    store.write_json(done, {"documents": n, "input": dict(stats), "hashes": stats.hashes, "languages": languages})
    return unit.index


def _save_keys(u: int, exact: np.ndarray, sig: np.ndarray, data_cfg, work: Work, partitions: int) -> None:
    """The unit's exact keys (key_hi, key_lo, id) and LSH band hashes (hash, id), by partition."""
    ids = keys.doc_ids(u, len(exact))
    if data_cfg.dedup.exact:
        save_partitioned(work.unit(u, ".exact"), np.concatenate([exact, ids[:, None]], axis=1), exact[:, 1],
                         partitions)
    if data_cfg.dedup.near:
        d = data_cfg.dedup
        bands = keys.band_hashes(sig, d.bands, d.rows)  # (n, bands)
        rows = np.stack([bands.ravel(), np.repeat(ids, d.bands)], axis=1)
        save_partitioned(work.unit(u, ".band"), rows, rows[:, 0], partitions)


def verified_pairs(rows: np.ndarray, work: Work, threshold: float) -> np.ndarray:
    """The LSH candidate pairs of one partition whose signatures agree on at least `threshold` of their values."""
    pairs = keys.bucket_pairs(rows)
    if not len(pairs):
        return pairs
    units, ordinals = keys.split_ids(pairs.ravel())
    flat = None
    for u in np.unique(units).tolist():  # one unit's signature file open at a time, only the rows needed read
        at = np.flatnonzero(units == u)
        rows = store.load_rows(work.unit(u, ".sig.npy"), ordinals[at])
        if flat is None:
            flat = np.empty((len(units), rows.shape[1]), rows.dtype)
        flat[at] = rows
    flat = flat.reshape(len(pairs), 2, -1)
    return pairs[keys.similar(flat[:, 0], flat[:, 1], threshold)]


def save_pairs(q: int, band_files: list[str], work: Work, threshold: float, partitions: int) -> int:
    """Band partition q's verified LSH pairs, both ways (source, destination), into `Work.part("pairs", q)` grouped by
    the partition of their source: the near-duplicate graph's edges, by node partition. Skipped when written (resume:
    it depends only on the units' keys, final by then)."""
    path = work.part("pairs", q)
    if not is_saved(path):
        pairs = verified_pairs(load_partition(band_files, q, 2), work, threshold)
        edges = np.concatenate([pairs, pairs[:, ::-1]])
        with np.errstate(over="ignore"):
            save_partitioned(path, edges, mix(edges[:, 0]), partitions)
    return q


def propagate(q: int, r: int, work: Work, partitions: int) -> int:
    """Round r of min-label propagation in node partition q of the near-duplicate graph: the partition's labels
    (round 0: each node's smallest neighbour or itself; later: the smallest of its last label and the labels its
    neighbours sent) into `labels{r}`, and the messages (neighbour, label) of the next round into `messages{r+1}`,
    grouped by the neighbour's partition. Only this partition's edges, labels and incoming messages are held (a pair
    found in several bands is one edge). Skipped when written (resume)."""
    out = work.part(f"messages{r + 1}", q)
    if is_saved(out):
        return q
    if r == 0:
        edges = load_partition([work.part("pairs", b) for b in range(partitions)], q, 2)
        edges = np.unique(edges, axis=0) if len(edges) else edges
        store.save(work.part("edges", q) + ".npy", edges)
        labels = keys.min_labels(np.concatenate([edges[:, [0, 0]], edges]))
    else:
        edges = store.load(work.part("edges", q) + ".npy")
        incoming = load_partition([work.part(f"messages{r}", b) for b in range(partitions)], q, 2)
        labels = keys.min_labels(np.concatenate([store.load(work.part(f"labels{r - 1}", q) + ".npy"), incoming]))
    store.save(work.part(f"labels{r}", q) + ".npy", labels)
    sent = keys.messages(edges, labels)
    with np.errstate(over="ignore"):
        save_partitioned(out, sent, mix(sent[:, 0]), partitions)
    return q


def unequal_labels(q: int, rounds: int, work: Work, partitions: int) -> list[tuple[int, int]]:
    """After the last round: (label of a neighbour, own label) for each edge into partition q whose two ends still
    disagree (a component wider than the rounds reached), each once — merged by union-find in the finish."""
    labels = store.load(work.part(f"labels{rounds - 1}", q) + ".npy")
    incoming = load_partition([work.part(f"messages{rounds}", b) for b in range(partitions)], q, 2)
    if not len(incoming):
        return []
    own = labels[np.searchsorted(labels[:, 0], incoming[:, 0]), 1]
    unequal = np.stack([incoming[:, 1], own], axis=1)[incoming[:, 1] != own]
    return [tuple(m) for m in np.unique(unequal, axis=0).tolist()] if len(unequal) else []


def save_near_duplicates(q: int, merges: list[tuple[int, int]], rounds: int, work: Work, n_units: int) -> int:
    """Node partition q's near duplicates — every node but its component's smallest id: a node whose last label's
    root, once the still-unequal labels are merged, is not itself — grouped by unit into `Work.part("near", q)`."""
    path = work.part("near", q)
    if not is_saved(path):
        labels = store.load(work.part(f"labels{rounds - 1}", q) + ".npy")
        uf = keys.UnionFind()
        for a, b in merges:
            uf.union(a, b)
        values, inverse = np.unique(labels[:, 1], return_inverse=True)
        roots = np.array([uf.find(int(v)) for v in values.tolist()], np.uint64)[inverse.ravel()]
        ids = labels[roots != labels[:, 0], 0]
        save_partitioned(path, ids[:, None], keys.split_ids(ids)[0], n_units)
    return q


def save_exact_copies(q: int, unit_files: list[str], work: Work, n_units: int) -> int:
    """Exact-key partition q's later copies (every copy of a key but the earliest), ids grouped by unit into
    `Work.part("exact", q)`."""
    path = work.part("exact", q)
    if not is_saved(path):
        ids = np.asarray(keys.later_copies(load_partition(unit_files, q, 3)), np.uint64)
        save_partitioned(path, ids[:, None], keys.split_ids(ids)[0], n_units)
    return q


def write_dedup(u: int, partitions: int, work: Work, exact: bool, near: bool) -> int:
    """The unit's dedup verdicts from every partition's exact copies and near duplicates."""
    out = np.zeros(len(store.load(work.unit(u, ".reason.npy"))), np.int8)
    for name, on, code in (("near", near, NEAR), ("exact", exact, EXACT)):  # exact wins, as in the one-process path
        if on:
            ids = load_partition([work.part(name, q) for q in range(partitions)], u, 1)[:, 0]
            out[keys.split_ids(ids)[1]] = code
    store.save(work.unit(u, ".dedup.npy"), out)
    return u


def _kept_texts(u: int, work: Work) -> tuple[list[int], list[str]]:
    """Ordinals and texts of the unit's documents that survive dedup and the per-document filters."""
    drop = store.load(work.unit(u, ".dedup.npy"))
    texts = _texts(work.unit(u, ".texts.jsonl"))
    ordinals = [o for o in sorted(texts) if drop[o] == KEPT]
    return ordinals, [texts[o] for o in ordinals]


def save_windows(u: int, work: Work, n: int, partitions: int) -> int:
    """The rows (window hash, id, word position) of the unit's kept documents, by partition. Skipped when written
    (resume: they depend only on the dedup verdicts, final by then)."""
    path = work.unit(u, ".windows")
    if is_saved(path):
        return u
    ordinals, texts = _kept_texts(u, work)
    parts = []
    for o, text in zip(ordinals, texts):
        hashes = window_hashes([w.group(0) for w in text_words(text)], n)
        if len(hashes):
            doc = keys.doc_id(u, o)
            parts.append(np.stack([hashes, np.full(len(hashes), doc, np.uint64),
                                   np.arange(len(hashes), dtype=np.uint64)], axis=1))
    rows = np.concatenate(parts) if parts else np.zeros((0, 3), np.uint64)
    save_partitioned(path, rows, rows[:, 0], partitions)
    return u


def save_repeats(p: int, units: list[int], work: Work) -> int:
    """Partition p's windows repeated from an earlier document, (id, word position) rows grouped by unit."""
    path = work.part("marks", p)
    if not is_saved(path):
        rows = keys.first_windows(load_partition([work.unit(u, ".windows") for u in units], p, 3))
        save_partitioned(path, rows, keys.split_ids(rows[:, 0])[0], max(units) + 1)
    return p


def write_marks(u: int, partitions: int, work: Work) -> int:
    """The unit's marks from every partition, sorted by (id, word position)."""
    rows = load_partition([work.part("marks", p) for p in range(partitions)], u, 2)
    store.save(work.unit(u, ".marks.npy"), rows[np.lexsort((rows[:, 1], rows[:, 0]))] if len(rows) else rows)
    return u


def final_texts(u: int, work: Work, data_cfg) -> tuple[list[str], dict]:
    """The unit's final documents (dedup drops applied, repeated substrings cut) and the counts they add to the
    manifest, in the one-process path's terms."""
    info = store.read_json(work.unit(u, ".json"))
    reason, lang, drop = (store.load(work.unit(u, s)) for s in (".reason.npy", ".lang.npy", ".dedup.npy"))
    ordinals, texts = _kept_texts(u, work)
    counts = collections.Counter(documents_in=info["input"].get("documents_in", 0))
    counts["exact_duplicates_removed"] = int((drop == EXACT).sum())
    counts["near_duplicates_removed"] = int((drop == NEAR).sum())
    undeduped = drop == KEPT
    by_reason = collections.Counter(REASONS[r] for r in reason[undeduped].tolist() if r)
    filtered = {k: v for k, v in by_reason.items() if k in HEURISTIC}
    reached = undeduped & ~np.isin(reason, [REASONS.index(h) for h in HEURISTIC])  # reached data.clean
    clean = {"languages": collections.Counter(info["languages"][i] for i in lang[reached].tolist()),
             **{f"removed_{k}": by_reason.get(k, 0) for k in DocumentCleaner.REASONS}}
    pii_found = store.load(work.unit(u, ".pii.npy"))[ordinals].sum(axis=0) if ordinals else np.zeros(len(pii.KINDS))
    clean["pii_redacted"] = {k: int(v) for k, v in zip(pii.KINDS, pii_found)}
    n = data_cfg.clean.substring_ngram
    if n:
        marks = store.load(work.unit(u, ".marks.npy"))
        _, mark_ordinals = keys.split_ids(marks[:, 0]) if len(marks) else (None, np.zeros(0, np.int64))
        words_removed = spans_removed = emptied = 0
        out = []
        for o, text in zip(ordinals, texts):
            rows = marks[mark_ordinals == o]
            if len(rows):
                words = text_words(text)
                flags = np.zeros(len(words) - n + 1, bool)
                flags[rows[:, 1].astype(np.int64)] = True
                mask = repeat_mask(len(words), flags, n)
                words_removed += int(mask.sum())
                spans_removed += len(spans(mask))
                text = cut_words(text, words, mask)
            if text.strip():
                out.append(text)
            else:
                emptied += 1
        texts = out
        clean.update(substring_removed_words=words_removed, substring_removed_spans=spans_removed,
                     substring_emptied_documents=emptied)
    return texts, {"counts": dict(counts), "filtered_by_reason": filtered, "clean": clean}


def split_of(text: str, val_fraction: float) -> tuple[str, int]:
    """("train" | "val", a 64-bit hash) by the document's sha256, as corpus.split_documents decides."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return ("val" if bucket < val_fraction else "train"), int.from_bytes(digest[8:16], "big")


def write_unit_tokens(u: int, texts: list[str], info: dict, work: Work, tokenizer, encode, val_fraction: float,
                      shards: int) -> int:
    """Tokenizes the unit's final documents and writes them per split, grouped by output shard (a hash of the
    document), so that each shard writer reads one contiguous slice of every unit."""
    by_split: dict[str, list[tuple[int, str]]] = {"train": [], "val": []}
    for text in texts:
        split, h = split_of(text, val_fraction)
        by_split[split].append((h % shards, text))
    for split, items in by_split.items():
        items.sort(key=lambda item: item[0])  # stable: documents keep their order inside a shard
        ids = encode(tokenizer, [t for _, t in items]) if items else []
        lengths = np.array([len(x) for x in ids], np.int64)
        per_shard = np.bincount(np.array([s for s, _ in items], np.int64), minlength=shards)
        store.save(work.unit(u, f".{split}.tokens.npy"),
                   np.concatenate(ids) if ids else np.zeros(0, np.uint32))
        store.save(work.unit(u, f".{split}.lengths.npy"), lengths)
        store.save(work.unit(u, f".{split}.shards.npy"), per_shard.astype(np.int64))
        info[split] = {"documents": len(items), "tokens": int(lengths.sum()),
                       "characters": sum(len(t) for _, t in items)}
    store.write_json(work.unit(u, ".final.json"), info)
    return u


def shard_pieces(units: list[int], split: str, s: int, work: Work):
    """The documents of output shard `s` of `split`: (tokens of one document) in unit order, streamed."""
    for u in units:
        lengths, before = _shard_lengths(u, split, s, work)
        if not len(lengths):
            continue
        yield from store.npy_pieces(work.unit(u, f".{split}.tokens.npy"), before, lengths)


def _shard_lengths(u: int, split: str, s: int, work: Work) -> tuple[np.ndarray, int]:
    """Token counts of unit u's documents that go to shard s of `split`, and the tokens of the unit before them."""
    per_shard = store.load(work.unit(u, f".{split}.shards.npy"))
    lengths = store.load(work.unit(u, f".{split}.lengths.npy"))
    first = int(per_shard[:s].sum())
    return lengths[first:first + int(per_shard[s])], int(lengths[:first].sum())


def write_output_shard(out_dir: str, split: str, s: int, units: list[int], work: Work, dtype, formats) -> dict:
    """Output shard `s` of `split` in each of `formats`, streamed from the units' pieces (a writer holds one document
    at a time). The writers need a local file: a remote `out_dir`'s shard is written to a local temporary directory
    first and then copied."""
    lengths = [_shard_lengths(u, split, s, work)[0] for u in units]
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    total, name = int(lengths.sum()), f"shard-{s:05d}"
    remote = store.is_remote(out_dir)
    with tempfile.TemporaryDirectory(prefix="llm_jax-shard-") if remote else contextlib.nullcontext() as staging:
        local = staging or os.path.join(out_dir, split)
        os.makedirs(local, exist_ok=True)
        if "numpy" in formats:
            write_npy_stream(os.path.join(local, name + ".tokens.npy"), shard_pieces(units, split, s, work), dtype,
                             total)
        store.save(os.path.join(local, name + ".docs.npy"), starts)
        if "array_record" in formats:
            write_array_record_shard(os.path.join(local, name), shard_pieces(units, split, s, work), dtype)
        if remote:
            for file in sorted(os.listdir(local)):
                store.upload(os.path.join(local, file), store.join(out_dir, split, file))
    return {"file": name, "documents": int(len(lengths)), "tokens": total, "formats": list(formats)}
