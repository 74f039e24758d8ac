"""`llm-jax data prepare --engine beam`: the preparation as Apache Beam pipelines (DirectRunner on one machine; the
same code on Dataflow, Flink or Spark).

Three pipelines run in turn over the units of llm_jax/data/beam/units.py (docs/data.md "At scale" has the picture):
  1. map + dedup: every unit is read and decided per document (keys, MinHash signature, heuristic filters,
     language / quality / toxicity verdicts, PII redaction) and writes its exact keys and LSH band hashes grouped by
     hash partition; once every unit is done, a partition reads its slice of every unit's keys, drops later copies
     of an exact key and verifies bucket-mates' signatures; the verified
     pairs go through connected components (min-label propagation, `cc_rounds` rounds, each node partition
     exchanging labels through files; the rare rest finished by union-find over the still-unequal labels); the
     duplicate ids are written grouped by unit, and every unit reads its dedup verdicts.
  2. substring (when data.clean.substring_ngram > 0): units write the window hashes of their kept documents by
     partition; a partition marks windows whose first document is an earlier one, writing the marks by unit; units
     read their marks.
  3. finalize: a tokenizer (given, or trained here on a deterministic sample), then per unit the final texts,
     train/validation split and tokens grouped by output shard; per output shard a writer streams its documents
     from every unit in unit order into numpy and ArrayRecord shards.
The driver writes the manifest from the units' and shards' files. Nothing depends on how many workers ran or in
which order they finished, so the shards and the manifest are byte-identical for any worker count; every stage
skips a unit / shard whose output exists, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time

from llm_jax.data import corpus as corpus_lib
from llm_jax.data import dedup
from llm_jax.data.beam import stages, store
from llm_jax.data.beam.units import Unit, input_paths, plan_units
from llm_jax.data.clean import pii
from llm_jax.data.prepare import _encode, _publish, tokenizer_entry, unigram_entropy
from llm_jax.data.shards import MANIFEST, MANIFEST_VERSION, token_dtype
from llm_jax.data.sources import SourceError
from llm_jax.data.tokenizers import load_tokenizer, train_tokenizer
from llm_jax.errors import UserError
from llm_jax.fileio import check_new_output

try:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
except ImportError:  # the `beam` extra
    beam = None

SHARD_INPUT_BYTES = 4 << 30  # input bytes per output shard at least: ~1B tokens of English text
WORK_LAYOUT = 3  # the work directory's files (3: shuffles and the graph through files); another is not resumed
TOKENIZER_SAMPLE_CHARS = 50_000_000  # a trained tokenizer learns from the first this many characters of train text


@dataclasses.dataclass
class BeamSettings:
    runner: str = "DirectRunner"
    workers: int = 1               # DirectRunner worker processes
    options: tuple[str, ...] = ()  # further Beam pipeline options (--project=..., --region=...)
    unit_mb: float = 64            # input megabytes per unit
    partitions: int = 0            # shuffle partitions; 0 = one per 64 MB of input (at least 4)
    cc_rounds: int = 4             # label-propagation rounds in the graph before the union-find finish
    running_mode: str = ""         # DirectRunner: "" = in this process for 1 worker, else multi_processing

    def pipeline_options(self) -> "PipelineOptions":
        flags = [f"--runner={self.runner}", *self.options]
        if self.runner == "DirectRunner":
            mode = self.running_mode or ("multi_processing" if self.workers > 1 else "in_memory")
            flags += [f"--direct_num_workers={self.workers}", f"--direct_running_mode={mode}"]
            if not any(o.startswith("--default_sdk_harness_log_level") for o in self.options):
                flags.append("--default_sdk_harness_log_level=WARNING")  # the workers' per-bundle INFO chatter
        return PipelineOptions(flags)


def _require_beam() -> None:
    if beam is None:
        raise SourceError("the Beam pipeline needs apache-beam: pip install 'llm_jax[beam]'")


def _check_config(data_cfg) -> None:
    if data_cfg.filter.perplexity_model:
        raise UserError("data.filter.perplexity_model scores the whole corpus with one model (cross-fitted n-grams "
                        "or a work directory): the Beam pipeline does not run it; use the one-process "
                        "`llm-jax data prepare` or drop the perplexity filter")


# ----------------------------------------------------------------------------------------- the three graphs


def _components(verified, work: stages.Work, partitions: int, rounds: int, n_units: int):
    """Near duplicates (every node of a connected component of the graph in the work directory's `pairs` files but
    its smallest id) into the `near` files, by unit; yields the node partitions as they finish. `rounds` rounds of
    min-label propagation, each a barrier and one task per node partition exchanging labels through files
    (stages.propagate); the edges whose ends still disagree are merged by union-find (usually none after a few
    rounds)."""
    step = verified
    for r in range(rounds):
        step = _after(step, f"labels {r}", list(range(partitions))) | f"round {r}" >> beam.Map(
            stages.propagate, r, work, partitions)
    merges = (_after(step, "unequal", list(range(partitions)))
              | "unequal labels" >> beam.FlatMap(stages.unequal_labels, rounds, work, partitions)
              | "merges" >> beam.combiners.ToList())
    return (_after(step, "components", list(range(partitions)))
            | "near duplicates" >> beam.Map(lambda q, m: stages.save_near_duplicates(q, m, rounds, work, n_units),
                                            beam.pvalue.AsSingleton(merges)))


def _after(pcoll, label: str, items: list):
    """`items`, once every element of `pcoll` is done (a barrier: a partition reads what every unit wrote), spread
    over the workers."""
    return (pcoll | f"{label}: all done" >> beam.combiners.Count.Globally()
            | f"{label}: list" >> beam.FlatMap(lambda _: items) | f"{label}: spread" >> beam.Reshuffle())


def map_and_dedup(p, units: list[Unit], data_cfg, work: stages.Work, partitions: int, rounds: int):
    lsh = dedup.MinHashLSH(data_cfg.dedup.bands, data_cfg.dedup.rows, data_cfg.dedup.shingle,
                           data_cfg.dedup.threshold)
    mapped = (p | "units" >> beam.Create(units) | "spread" >> beam.Reshuffle()
              | "map" >> beam.Map(stages.map_unit, data_cfg, work, lsh, partitions))
    # every unit's keys take part, even when a resumed run finds some verdicts written: a unit's copies are decided
    # against all the others (rewriting a verdict file gives the same bytes)
    files = lambda suffix: [work.unit(u.index, suffix) for u in units]  # noqa: E731
    kinds = [k for k, on in (("exact", data_cfg.dedup.exact), ("band", data_cfg.dedup.near)) if on]
    jobs = _after(mapped, "keys", [(k, q) for k in kinds for q in range(partitions)])
    order = [u.index for u in units]
    exact = (jobs | "exact" >> beam.Filter(lambda kq: kq[0] == "exact")
             | "later copies" >> beam.Map(lambda kq: stages.save_exact_copies(kq[1], files(".exact"), work,
                                                                             max(order) + 1)))
    verified = (jobs | "bands" >> beam.Filter(lambda kq: kq[0] == "band")
                | "verify" >> beam.Map(lambda kq: stages.save_pairs(kq[1], files(".band"), work,
                                                                   data_cfg.dedup.threshold, partitions)))
    near = (_components(verified, work, partitions, rounds, max(order) + 1) if data_cfg.dedup.near
            else p | "no near dedup" >> beam.Create([]))
    decided = (mapped, exact, near) | "decided" >> beam.Flatten()
    return (_after(decided, "verdicts", order)
            | "write dedup" >> beam.Map(stages.write_dedup, partitions, work, data_cfg.dedup.exact,
                                        data_cfg.dedup.near))


def substring(p, units: list[Unit], work: stages.Work, n: int, partitions: int):
    order = [u.index for u in units]
    windows = (p | "units" >> beam.Create(order) | "spread" >> beam.Reshuffle()
               | "windows" >> beam.Map(stages.save_windows, work, n, partitions))
    repeats = (_after(windows, "partitions", list(range(partitions)))
               | "repeats" >> beam.Map(stages.save_repeats, order, work))
    return _after(repeats, "per unit", order) | "write marks" >> beam.Map(stages.write_marks, partitions, work)


class _Finalize(beam.DoFn if beam else object):
    def __init__(self, work, data_cfg, tokenizer_path, shards):
        self.work, self.data_cfg, self.tokenizer_path, self.shards = work, data_cfg, tokenizer_path, shards

    def setup(self):
        with store.local_copy(self.tokenizer_path) as path:
            self.tokenizer = load_tokenizer(path)

    @staticmethod
    def _encode(tokenizer, docs):
        # one thread: a worker is one core, and the runner's workers are the parallelism (the tokenizer libraries
        # would otherwise spread a batch over every core of the machine, under every worker at once)
        return _encode(tokenizer, docs, threads=1)

    def process(self, u):
        if not store.exists(self.work.unit(u, ".final.json")):
            texts, info = stages.final_texts(u, self.work, self.data_cfg)
            stages.write_unit_tokens(u, texts, info, self.work, self.tokenizer, self._encode,
                                     self.data_cfg.val_fraction, self.shards)
        yield u


def finalize(p, units: list[Unit], work: stages.Work, data_cfg, tokenizer_path: str, out_dir: str, shards: int,
             dtype, formats):
    done = (p | "units" >> beam.Create([u.index for u in units]) | "spread" >> beam.Reshuffle()
            | "finalize" >> beam.ParDo(_Finalize(work, data_cfg, tokenizer_path, shards)))
    order = sorted(u.index for u in units)

    def write(key, _):
        split, s = key
        marker = work.shard(split, s)
        if not store.exists(marker):
            entry = stages.write_output_shard(out_dir, split, s, order, work, dtype, formats)
            store.write_json(marker, entry)
        return key

    return (done | "all units" >> beam.combiners.Count.Globally()
            | "shards" >> beam.FlatMap(lambda _: [((split, s), None) for split in ("train", "val")
                                                  for s in range(shards)])
            | "spread shards" >> beam.Reshuffle()
            | "write shards" >> beam.MapTuple(write))


# ------------------------------------------------------------------------------------------------- driver


def _settings_fingerprint(inputs, data_cfg, tokenizer: str, settings: BeamSettings) -> dict:
    files = {path: None if path in corpus_lib.EMBEDDED or path.startswith("tfds:") else store.stamp(path)
             for path in input_paths(inputs)}
    return {"work_layout": WORK_LAYOUT, "inputs": files, "data": data_cfg.to_dict(), "tokenizer": tokenizer,
            "unit_mb": settings.unit_mb,
            "partitions": settings.partitions, "cc_rounds": settings.cc_rounds}


def _open_work(root: str, fingerprint: dict, log) -> stages.Work:
    path = store.join(root, "settings.json")
    if store.exists(path) and store.read_json(path) != json.loads(json.dumps(fingerprint)):
        raise UserError(f"{root} holds an interrupted preparation of other inputs or settings: remove it to "
                        f"start over, or run with the same inputs and settings to resume it")
    work = stages.Work(root)
    store.write_json(path, fingerprint)
    return work


def _run(graph, settings: BeamSettings, log, name: str, *args) -> float:
    started = time.perf_counter()
    with beam.Pipeline(options=settings.pipeline_options()) as p:
        graph(p, *args)
    seconds = time.perf_counter() - started
    log(f"data: {name} done in {seconds:.1f} s")
    return seconds


def _sample_for_tokenizer(order: list[int], work: stages.Work, data_cfg, limit: int) -> list[str]:
    """The final train documents of the first units (reading order) up to `limit` characters."""
    docs, chars = [], 0
    for u in order:
        texts, _ = stages.final_texts(u, work, data_cfg)
        for text in texts:
            if stages.split_of(text, data_cfg.val_fraction)[0] == "train":
                docs.append(text)
                chars += len(text)
                if chars >= limit:
                    return docs
    return docs


def _merge_counts(order: list[int], work: stages.Work, data_cfg, cleaner_cfg) -> dict:
    counts = collections.Counter()
    inputs, filtered, clean, languages = collections.Counter(), collections.Counter(), collections.Counter(), \
        collections.Counter()
    pii_found = collections.Counter()
    for u in order:
        info = store.read_json(work.unit(u, ".json"))
        inputs.update(info["input"])
        final = store.read_json(work.unit(u, ".final.json"))
        counts.update(final["counts"])
        filtered.update(final["filtered_by_reason"])
        for k, v in final["clean"].items():
            if k == "languages":
                languages.update(v)
            elif k == "pii_redacted":
                pii_found.update(v)
            else:
                clean[k] += v
    c = cleaner_cfg
    out_clean: dict = {}
    if [code for code in c.languages.split(",") if code.strip()]:
        out_clean["languages"] = dict(sorted(languages.items()))
        out_clean["removed_language"] = clean["removed_language"]
    if c.quality_model:
        out_clean["removed_quality"] = clean["removed_quality"]
    if c.max_toxicity:
        out_clean["removed_toxicity"] = clean["removed_toxicity"]
    if c.redact_pii:
        out_clean["pii_redacted"] = {k: pii_found[k] for k in pii.KINDS}
    if c.substring_ngram:
        for k in ("substring_removed_words", "substring_removed_spans", "substring_emptied_documents"):
            out_clean[k] = clean[k]
    return {"documents_in": counts["documents_in"], "input": dict(sorted(inputs.items())),
            "exact_duplicates_removed": counts["exact_duplicates_removed"],
            "near_duplicates_removed": counts["near_duplicates_removed"],
            "filtered": sum(filtered.values()), "filtered_by_reason": dict(sorted(filtered.items())),
            "clean": out_clean}


def plan(inputs: list[str], data_cfg, settings: BeamSettings) -> dict:
    """What a run would do (`--dry-run`): the units, partitions and the Beam options."""
    units, total = _units(inputs, data_cfg, settings)
    return {"units": len(units), "input_bytes": total, "partitions": _partitions(settings, total),
            "output_shards": output_shards(data_cfg, total),
            "pipeline_options": settings.pipeline_options().get_all_options(drop_default=True)}


def _units(inputs: list[str], data_cfg, settings: BeamSettings) -> tuple[list[Unit], int]:
    """The units of `inputs` and the bytes of their files."""
    units = plan_units(inputs, data_cfg, int(settings.unit_mb * 2**20))
    return units, sum(store.size(u.path) for u in units if u.first and u.kind not in ("embedded", "tfds"))


def _partitions(settings: BeamSettings, total_bytes: int) -> int:
    return settings.partitions or max(4, -(-total_bytes // (64 << 20)))


def output_shards(data_cfg, total_bytes: int) -> int:
    """Output shards: `data.shards`, or one per SHARD_INPUT_BYTES of input where that is more (a shard's writer holds
    8 bytes per document of its shard, and a pod's hosts read shards in parallel)."""
    return max(data_cfg.shards, -(-total_bytes // SHARD_INPUT_BYTES))


def prepare(inputs: list[str], output: str, data_cfg, vocab_size: int, settings: BeamSettings,
            seq_len: int | None = None, tokenizer: str = "", log=print,
            formats: tuple[str, ...] = ("numpy", "array_record")) -> dict:
    """Prepares `inputs` into `output` with the Beam pipelines; the work directory `output + ".work"` keeps what
    finished until the output is published, so running the same command again after a kill resumes."""
    _require_beam()
    _check_config(data_cfg)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)  # its workers' start-up chatter
    given = load_tokenizer(tokenizer) if tokenizer else None
    root = store.absolute(output) + ".work"
    _check_new_output(output, root)
    work = _open_work(root, _settings_fingerprint(inputs, data_cfg, tokenizer, settings), log)
    units, total = _units(inputs, data_cfg, settings)
    if not units:
        raise SourceError("the inputs hold no file to read")
    order = [u.index for u in units]
    done = [u for u in order if store.exists(work.unit(u, ".json"))]
    if done:
        log(f"data: resuming: {len(done)} of {len(units)} units already read"
            + (", deduplicated" if store.exists(store.join(root, "dedup.done")) else "") + f" ({root})")
    partitions, shards = _partitions(settings, total), output_shards(data_cfg, total)
    log(f"data: {len(units)} units, {partitions} partitions, {shards} output shards, {settings.runner} with "
        f"{settings.workers} worker(s)")
    seconds = {}
    if not store.exists(store.join(root, "dedup.done")):
        seconds["map_dedup"] = _run(map_and_dedup, settings, log, "map + dedup", units, data_cfg, work, partitions,
                                    settings.cc_rounds)
        store.write_bytes(store.join(root, "dedup.done"), b"")
    if data_cfg.clean.substring_ngram and not store.exists(store.join(root, "substring.done")):
        seconds["substring"] = _run(substring, settings, log, "substring", units, work, data_cfg.clean.substring_ngram,
                                    partitions)
        store.write_bytes(store.join(root, "substring.done"), b"")
    tok_dir = store.join(root, "tokenizer")
    if given:
        _save_tokenizer(tok_dir, given.save)
    elif not any(f.startswith("tokenizer.") for f in store.listdir(tok_dir)):
        sample = _sample_for_tokenizer(order, work, data_cfg, TOKENIZER_SAMPLE_CHARS)
        if not sample:
            raise SourceError("every document was removed; relax data.dedup / data.filter / data.clean")
        log(f"data: training a {vocab_size}-token {data_cfg.tokenizer_kind} tokenizer on {len(sample):,} documents")
        _save_tokenizer(tok_dir, lambda d: train_tokenizer(data_cfg.tokenizer_kind, sample, vocab_size, d))
    tokenizer_path = store.join(tok_dir, next(f for f in store.listdir(tok_dir) if f.startswith("tokenizer.")))
    out_dir = store.join(root, "out")
    store.makedirs(out_dir)
    with store.local_copy(tokenizer_path) as local:  # loaded, hashed and copied into the output from one copy
        tok = load_tokenizer(local)
        tok_entry = tokenizer_entry(tok, local)
        if tok.vocab_size > vocab_size:
            raise UserError(f"the tokenizer has {tok.vocab_size} tokens but model.vocab_size={vocab_size}; set "
                            f"model.vocab_size >= {tok.vocab_size}")
        store.upload(local, store.join(out_dir, tok_entry["file"]))
    seconds["finalize"] = _run(finalize, settings, log, "tokenize + write shards", units, work, data_cfg,
                               tokenizer_path, out_dir, shards, token_dtype(tok.vocab_size), formats)
    manifest = _manifest(order, work, data_cfg, tok, tok_entry, out_dir, inputs, seq_len, partitions, shards)
    store.write_json(store.join(out_dir, MANIFEST), manifest, indent=2, sort_keys=True)
    if store.is_remote(output):
        store.copy_tree(out_dir, output, last=MANIFEST)
    else:
        _publish(out_dir, output)
    store.remove_tree(root)
    log(f"data: {manifest['counts']['documents_out']:,} documents, {manifest['counts']['tokens_out']:,} tokens "
        f"-> {output}")
    manifest["seconds"] = seconds  # for the caller: not in the file (which must not depend on the run)
    return manifest


def _check_new_output(output: str, root: str) -> None:
    """A new (or empty) output; a remote one may also hold what a run killed while publishing it copied (its work
    directory then holds the finished output, which the resumed run copies again)."""
    if not store.is_remote(output):
        check_new_output(output, flag="--output")
    elif store.exists(output) or store.files_under(output, ("",)):
        if not store.exists(store.join(root, "out", MANIFEST)):
            raise UserError(f"--output {output} exists and is not empty; choose a new --output")


def _save_tokenizer(tok_dir: str, write) -> None:
    """The files `write(directory)` makes, into `tok_dir` whole or not at all: a local directory renamed into place;
    a remote one uploaded with the tokenizer file last (its presence is what a resumed run looks for)."""
    if store.is_remote(tok_dir):
        with tempfile.TemporaryDirectory(prefix="llm_jax-tokenizer-") as tmp:
            write(tmp)
            for name in sorted(os.listdir(tmp), key=lambda f: (f.startswith("tokenizer."), f)):
                store.upload(os.path.join(tmp, name), store.join(tok_dir, name))
        return
    tmp = tok_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    write(tmp)
    shutil.rmtree(tok_dir, ignore_errors=True)
    os.replace(tmp, tok_dir)


def _manifest(order, work, data_cfg, tok, tok_entry, out_dir, inputs, seq_len, partitions, n_shards) -> dict:
    counts = _merge_counts(order, work, data_cfg, data_cfg.clean)
    splits = {}
    for split in ("train", "val"):
        shards = [store.read_json(work.shard(split, s)) for s in range(n_shards)]
        finals = [store.read_json(work.unit(u, ".final.json"))[split] for u in order]
        splits[split] = {"documents": sum(f["documents"] for f in finals), "tokens": sum(f["tokens"] for f in finals),
                         "characters": sum(f["characters"] for f in finals), "shards": shards}
        if seq_len:
            lengths = [store.load(work.unit(u, f".{split}.lengths.npy")) for u in order]
            splits[split]["long_documents"] = int(sum((x > seq_len + 1).sum() for x in lengths))
    if not splits["val"]["documents"] or not splits["train"]["documents"]:
        raise SourceError(f"the prepared data has {splits['train']['documents']} train and {splits['val']['documents']}"
                          f" validation documents: raise or lower data.val_fraction, or give more input")
    counts["documents_out"] = splits["train"]["documents"] + splits["val"]["documents"]
    counts["tokens_out"] = splits["train"]["tokens"] + splits["val"]["tokens"]
    counts["long_documents"] = sum(s.get("long_documents", 0) for s in splits.values())
    hashes = {}
    for u in order:
        hashes.update(store.read_json(work.unit(u, ".json"))["hashes"])
    train_tokens = [store.join(out_dir, "train", s["file"] + ".tokens.npy")
                    for s in splits["train"]["shards"] if "numpy" in s.get("formats", ["numpy"])]
    return {"version": MANIFEST_VERSION, "counts": counts, "splits": splits,
            "tokenizer": tok_entry,
            "sources": dict(sorted(hashes.items())),
            "embedded_sources": [i for i in inputs if i in corpus_lib.EMBEDDED],
            "data_config": data_cfg.to_dict(),
            "pipeline": {"engine": "apache_beam", "units": len(order), "partitions": partitions},
            "unigram_entropy": (unigram_entropy((b for path in train_tokens for b in store.npy_blocks(path)),
                                                tok.vocab_size)
                                if train_tokens else 0.0)}
