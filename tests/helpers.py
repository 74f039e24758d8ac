"""Helpers the tests import (tests/ is put on sys.path by conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The 245 Chinchilla Figure 4 points (Besiroglu et al. 2024) in ../shared beside the checkout.
CHINCHILLA_CSV = os.path.join(REPO, "..", "shared", "data", "chinchilla_fig4_extracted.csv")


def small_config(objective: str = "causal_lm", **model):
    """A 2-layer, d=32 model config (resolved and validated) for fast CPU tests; `model` overrides fields."""
    from llm_jax import config as config_lib
    cfg = config_lib.default_config()
    cfg.model.update(dict(dict(vocab_size=256, seq_len=16, d_model=32, n_layers=2, n_heads=4), **model))
    cfg.train.objective = objective
    if objective == "seq2seq":  # step-level tests feed their own batches; the file is never read
        cfg.data.pairs = "pairs.jsonl"
    if objective == "sft":  # packed examples: each sees only itself unless a test says otherwise
        cfg.data.sft, cfg.model.document_mask = "sft.jsonl", model.get("document_mask", True)
    cfg.train.update(steps=20, batch_size=8, warmup_steps=2, lr=3e-3, lr_min=3e-4, eval_every=10, eval_batches=2,
                     log_every=5)
    cfg.checkpoint.every = 10
    cfg = config_lib.resolve(cfg)
    config_lib.validate(cfg)
    return cfg


def run_cli(*args, env=None, timeout=900):
    """Runs `python -m llm_jax ARGS` in a subprocess from the repository root; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "llm_jax", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=dict(os.environ, **(env or {})), timeout=timeout)


def run_script(code: str, env=None, timeout=900):
    """Runs Python `code` in a fresh interpreter (for fake-device counts that must precede JAX's start)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, **(env or {})), timeout=timeout)


def write_hostile_inputs(d):
    """Every kind of bad input `read_documents` must count and skip (or repair), beside good text in `d`:
    invalid_unicode_documents 1, non_utf8_documents 1, bad_json_lines 2, corrupt_archives 3, unreadable_files 2,
    binary_files 3, in 11 files; documents: the good one, "fine row", "abc\ufffddef" and the Latin-1 one."""
    import gzip
    import random
    (d / "good.txt").write_text("a good document with words")
    (d / "rows.jsonl").write_text('{"text": "abc\\ud800def"}\n{"text": "fine row"}\n' + "[" * 100_000 + "\n"
                                  + '{"text": ' + "1" * 5000 + "}\n")  # lone surrogate, deep nesting, 5000 digits
    payload = gzip.compress(b'{"text": "lost row"}\n' * 200)
    (d / "truncated.jsonl.gz").write_bytes(payload[: len(payload) // 2])
    (d / "notgzip.jsonl.gz").write_bytes(b'{"text": "plain, not gzip"}\n')
    corrupt = bytearray(payload)
    corrupt[20:40] = bytes(20)
    (d / "corrupt.jsonl.gz").write_bytes(bytes(corrupt))
    os.symlink(d / "nowhere.txt", d / "dangling.txt")
    os.mkfifo(d / "fifo.txt")  # opening it would block forever
    (d / "random.txt").write_bytes(random.Random(0).randbytes(20_000))
    (d / "image.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    (d / "program.txt").write_bytes(open("/bin/sh", "rb").read(16_384))  # an ELF executable's first 16 KB
    (d / "latin1.txt").write_bytes("café crème brûlée, déjà vu à la carte".encode("latin-1"))  # text, not binary


def prepared_documents(out) -> list[tuple]:
    """Every document of a prepared directory's two splits as a tuple of token ids, sorted (the one-process and
    the Beam paths order shards differently)."""
    import numpy as np
    from llm_jax.data.shards import PreparedSplit
    docs = []
    for split in ("train", "val"):
        s = PreparedSplit(str(out), split)
        for tokens, starts in zip(s.tokens, s.doc_starts):
            bounds = list(starts) + [tokens.size]
            docs += [tuple(np.asarray(tokens[a:b]).tolist()) for a, b in zip(bounds[:-1], bounds[1:])]
    return sorted(docs)


@contextlib.contextmanager
def small_disk(path, size: str):
    """A tmpfs of `size` (e.g. "600k") mounted at `path` for the block, unmounted after; the test is skipped where
    mounting needs privileges this machine does not give."""
    import pytest
    os.makedirs(path, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk case is untested")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def comparison_sft_file(path) -> str:
    """A fine-tuning file of the 100 records {"prompt": "a b?", "completion": " yes" if a < b else " no"} (digits
    a, b): tokens the small test model's Shakespeare tokenizer has, short enough for its 16-token context."""
    with open(path, "w") as f:
        for a in range(10):
            for b in range(10):
                f.write(json.dumps({"prompt": f"{a} {b}?", "completion": " yes" if a < b else " no"}) + "\n")
    return str(path)


def sft_overrides(base: str, data: str, **more) -> dict:
    """--config overrides of an SFT run from work directory `base` on `data` (use with its config.json)."""
    return {"train.objective": "sft", "data.sft": data, "model.document_mask": "true",
            "checkpoint.restore_from": base, "train.eval_every": "0", **{k: str(v) for k, v in more.items()}}
