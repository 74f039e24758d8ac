"""`llm-jax data bench --scale GB`: the Beam preparation on a corpus of GB gigabytes built here, with 1 and 2 workers.

The corpus is synthetic and says so: documents of 20-80 lines drawn independently at random from Shakespeare's
plays (the only large offline text every install has), written as JSONL parts of 64 MB; 4% of them are planted
exact copies (case changed) and 4% near copies (one word inserted), so the dedup stages have real work and a known
answer. Both runs prepare the same corpus with the same tokenizer (trained once, beforehand), so their outputs must be
byte-identical; the benchmark checks that. Reported: seconds, tokens/s in all and per worker, the speed-up from 1 to 2
workers, peak resident memory of every process of the run (the driver runs the DirectRunner's shuffles; workers run
the stages), the planted duplicates found, and the cost of 1 TB at the measured per-core rate.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import threading
import time

from llm_jax.data.beam.pipeline import BeamSettings, prepare
from llm_jax.data.corpus import shakespeare_scenes
from llm_jax.data.tokenizers import train_tokenizer

PART_BYTES = 64 << 20
PLANT_FRACTION = 0.04
CORE_HOUR_USD = 0.056  # a Dataflow / Compute Engine vCPU-hour (us-central1 list price, 2026), memory not included


def build_corpus(directory: str, gigabytes: float, seed: int = 0, log=print) -> dict:
    """Writes the synthetic corpus; returns what was planted."""
    lines = [line for scene in shakespeare_scenes() for line in scene.splitlines() if line.strip()]
    rng = random.Random(seed)
    target, written, part, out = int(gigabytes * 1e9), 0, 0, None
    planted = {"documents": 0, "exact_copies": 0, "near_copies": 0}
    recent: list[str] = []
    os.makedirs(directory, exist_ok=True)
    while written < target:
        if out is None or out.tell() >= PART_BYTES:
            if out:
                out.close()
            out = open(os.path.join(directory, f"part-{part:05d}.jsonl"), "w", encoding="utf-8")
            part += 1
        roll = rng.random()
        if recent and roll < PLANT_FRACTION:
            text = rng.choice(recent).upper()
            planted["exact_copies"] += 1
        elif recent and roll < 2 * PLANT_FRACTION:
            text = rng.choice(recent)
            at = rng.randrange(len(text))
            cut = text.find(" ", at)
            text = text[:cut] + " and" + text[cut:] if cut > 0 else text + " again"  # one word more
            planted["near_copies"] += 1
        else:
            text = "\n".join(rng.choice(lines) for _ in range(rng.randint(20, 80)))  # no two alike by chance
            recent = (recent + [text])[-1000:]
        row = json.dumps({"text": text}) + "\n"
        out.write(row)
        written += len(row.encode("utf-8"))
        planted["documents"] += 1
        if planted["documents"] % 100_000 == 0:
            log(f"bench: corpus {written / 1e9:.2f} / {gigabytes:g} GB")
    out.close()
    planted["bytes"] = written
    return planted


class PeakMemory:
    """Polls /proc for the peak resident memory of this process and of every process below it: VmHWM (the kernel's
    high-water mark, which also counts file pages mapped in, such as a shard written through a memory map) and the
    largest anonymous resident memory seen (RssAnon, sampled: what the process itself holds)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peaks, self.anon, self._stop = interval, {}, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._poll()

    def _run(self):
        while not self._stop.wait(self.interval):
            self._poll()

    def _poll(self):
        me = os.getpid()
        parents = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
        for pid in parents:
            p = pid
            while p not in (0, 1, me) and p in parents:
                p = parents[p]
            if p == me:
                try:
                    with open(f"/proc/{pid}/status") as f:
                        fields = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)
                                  if k in ("VmHWM", "RssAnon")}
                except (OSError, ValueError):
                    continue
                if "VmHWM" in fields:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), fields["VmHWM"])
                    self.anon[pid] = max(self.anon.get(pid, 0), fields.get("RssAnon", 0))

    def report(self) -> dict:
        me = os.getpid()
        worker = lambda peaks: max((v for k, v in peaks.items() if k != me), default=0)  # noqa: E731
        return {"driver_peak_bytes": self.peaks.get(me, 0), "worker_peak_bytes": worker(self.peaks),
                "driver_peak_anon_bytes": self.anon.get(me, 0), "worker_peak_anon_bytes": worker(self.anon)}


def _digest(path: str) -> str:
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode() + hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def bench_scale(cfg, gigabytes: float, directory: str, workers=(1, 2), log=print) -> dict:
    """Builds the corpus under `directory` (kept for reruns), then prepares it once per worker count."""
    corpus = os.path.join(directory, f"corpus-{gigabytes:g}gb")
    info_path = os.path.join(corpus, "planted.json")
    if not os.path.exists(info_path):
        log(f"bench: building a {gigabytes:g} GB corpus in {corpus}")
        planted = build_corpus(corpus, gigabytes, log=log)
        with open(info_path, "w") as f:
            json.dump(planted, f)
    with open(info_path) as f:
        planted = json.load(f)
    tok_dir = os.path.join(directory, "tokenizer")
    if not os.path.isdir(tok_dir):
        train_tokenizer(cfg.data.tokenizer_kind, shakespeare_scenes(), cfg.model.vocab_size, tok_dir)
    inputs = [os.path.join(corpus, f) for f in sorted(os.listdir(corpus)) if f.endswith(".jsonl")]
    result = {"corpus_bytes": planted["bytes"], "documents_in": planted["documents"], "planted": planted, "runs": {}}
    digests = {}
    for n in workers:
        out = os.path.join(directory, f"out-{n}w")
        for stale in (out, out + ".work"):  # a fresh run each time (a killed bench leaves its work directory)
            shutil.rmtree(stale, ignore_errors=True)
        log(f"bench: preparing with {n} worker(s)")
        started = time.perf_counter()
        with PeakMemory() as memory:
            settings = BeamSettings(workers=n, running_mode="multi_processing")  # worker processes for 1 too
            manifest = prepare(inputs, out, cfg.data, cfg.model.vocab_size, settings, cfg.model.seq_len,
                               tokenizer=tok_dir, log=log)
        seconds = time.perf_counter() - started
        tokens = manifest["counts"]["tokens_out"]
        result["runs"][n] = {"seconds": seconds, "stage_seconds": manifest["seconds"], "tokens_out": tokens,
                             "tokens_per_sec": tokens / seconds, "tokens_per_sec_per_worker": tokens / seconds / n,
                             "mb_per_sec_per_worker": planted["bytes"] / 1e6 / seconds / n, **memory.report(),
                             "exact_duplicates_removed": manifest["counts"]["exact_duplicates_removed"],
                             "near_duplicates_removed": manifest["counts"]["near_duplicates_removed"]}
        digests[n] = _digest(out)
    runs = result["runs"]
    if 1 in runs and 2 in runs:
        result["speedup_1_to_2"] = runs[1]["seconds"] / runs[2]["seconds"]
    result["identical_outputs"] = len(set(digests.values())) == 1
    per_core = max(r["mb_per_sec_per_worker"] for r in runs.values()) * 1e6  # bytes/s on one core
    core_hours = 1e12 / per_core / 3600
    result["one_tb"] = {"core_hours": core_hours, "usd_at_core_hour": core_hours * CORE_HOUR_USD,
                        "hours_on_1000_cores": core_hours / 1000, "core_hour_usd": CORE_HOUR_USD}
    return result


def format_report(r: dict) -> str:
    lines = [f"corpus {r['corpus_bytes'] / 1e9:.2f} GB, {r['documents_in']:,} documents (planted "
             f"{r['planted']['exact_copies']:,} exact / {r['planted']['near_copies']:,} near copies; synthetic)"]
    for n, run in r["runs"].items():
        mib = lambda who: (f"{run[who + '_peak_bytes'] / 2**20:,.0f} MiB (anonymous "  # noqa: E731
                           f"{run[who + '_peak_anon_bytes'] / 2**20:,.0f})")
        lines.append(f"{n} worker(s): {run['seconds']:.0f} s, {run['tokens_per_sec']:,.0f} tokens/s "
                     f"({run['tokens_per_sec_per_worker']:,.0f} per worker, "
                     f"{run['mb_per_sec_per_worker']:.2f} MB/s per worker), peak memory driver {mib('driver')} / "
                     f"worker {mib('worker')}; removed {run['exact_duplicates_removed']:,} exact "
                     f"+ {run['near_duplicates_removed']:,} near duplicates")
    if "speedup_1_to_2" in r:
        lines.append(f"speed-up 1 -> 2 workers: {r['speedup_1_to_2']:.2f}x (target >= 1.7x); outputs identical: "
                     f"{r['identical_outputs']}")
    t = r["one_tb"]
    lines.append(f"1 TB at this per-core rate: {t['core_hours']:,.0f} core-hours = {t['hours_on_1000_cores']:.1f} h "
                 f"on 1,000 cores, ${t['usd_at_core_hour']:,.0f} at ${t['core_hour_usd']}/core-hour (CPU only)")
    return "\n".join(lines)
