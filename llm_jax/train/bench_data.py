"""`llm-jax data bench`: the data path's speed, each figure beside the one it must beat, measured in one run.

- loader: tokens/s of `BatchLoader.batch` over the config's training data, against the tokens/s of the
  config's training step measured in the same process (target: > 20x);
- prepare: tokenize + pack throughput per core when preparing the embedded corpus with sentencepiece
  (target: >= 1M tokens/s per core);
- dedup: seconds for MinHash + LSH near-duplicate detection over 100k short synthetic documents
  (target: < 120 s on 2 cores).
"""

from __future__ import annotations

import os
import random
import tempfile
import time

from llm_jax.data.dedup import MinHashLSH
from llm_jax.data.loader import BatchLoader
from llm_jax.data.pipeline import training_data
from llm_jax.data.prepare import prepare
from llm_jax.train.bench import bench_train


def bench_loader(cfg, batches: int = 200, log=print) -> dict:
    data = training_data(cfg, log=log)
    loader = BatchLoader(data.train, cfg.train.batch_size, cfg.train.seed, weights=data.weights)
    loader.batch(0)
    start = time.perf_counter()
    for step in range(1, batches + 1):
        loader.batch(step)
    seconds = time.perf_counter() - start
    return {"loader_tokens_per_sec": batches * cfg.train.batch_size * cfg.model.seq_len / seconds}


def bench_prepare(cfg, log=print) -> dict:
    d = cfg.data.copy_and_resolve_references()
    d.tokenizer_kind, d.tokenizer = "sentencepiece_bpe", ""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = prepare(["shakespeare"], os.path.join(tmp, "out"), d, cfg.model.vocab_size, cfg.model.seq_len,
                           log=log)
    seconds = manifest["seconds"]["tokenize_and_pack"]
    cores = os.cpu_count() or 1
    tokens = manifest["counts"]["tokens_out"]
    return {"prepare_tokens": tokens, "prepare_seconds": seconds, "prepare_cores": cores,
            "prepare_tokens_per_sec_per_core": tokens / seconds / cores}


def bench_dedup(n_docs: int = 100_000, seed: int = 0) -> dict:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(30_000)]
    docs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(20, 80))) for _ in range(n_docs)]
    start = time.perf_counter()
    removed = int(MinHashLSH().duplicates(docs).sum())
    return {"dedup_documents": n_docs, "dedup_seconds": time.perf_counter() - start, "dedup_removed": removed}


def bench_data(cfg, train_steps: int = 5, log=print) -> dict:
    result = bench_loader(cfg, log=log)
    train = bench_train(cfg, steps=train_steps, warmup=2, log=log)
    result["train_tokens_per_sec"] = train["tokens_per_sec"]
    result["loader_vs_train"] = result["loader_tokens_per_sec"] / train["tokens_per_sec"]
    log(f"data bench: loader {result['loader_tokens_per_sec']:,.0f} tokens/s = "
        f"{result['loader_vs_train']:.0f}x the training step's {train['tokens_per_sec']:,.0f} (target > 20x)")
    result.update(bench_prepare(cfg, log=log))
    log(f"data bench: prepare {result['prepare_tokens_per_sec_per_core'] / 1e6:.2f}M tokens/s per core "
        f"({result['prepare_tokens']:,} tokens in {result['prepare_seconds']:.2f}s on {result['prepare_cores']} "
        f"cores; target >= 1M)")
    result.update(bench_dedup())
    log(f"data bench: MinHash dedup of {result['dedup_documents']:,} documents in {result['dedup_seconds']:.1f}s "
        f"(target < 120s)")
    return result
