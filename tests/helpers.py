"""Helpers the tests import (tests/ is put on sys.path by conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The 245 Chinchilla Figure 4 points (Besiroglu et al. 2024) in ../shared beside the checkout.
CHINCHILLA_CSV = os.path.join(REPO, "..", "shared", "data", "chinchilla_fig4_extracted.csv")


def small_config(**model):
    """A 2-layer, d=32 model config (resolved and validated) for fast CPU tests; `model` overrides fields."""
    from llm_jax import config as config_lib
    cfg = config_lib.default_config()
    cfg.model.update(dict(dict(vocab_size=256, seq_len=16, d_model=32, n_layers=2, n_heads=4), **model))
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
