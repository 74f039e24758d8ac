"""`llm-jax bench generate`: its figures are consistent with each other and with the model (not timed: the
figures are for the README's command); `llm-jax eval passkey` on the same small run."""

import json

import jax
import pytest

from helpers import run_cli
from llm_jax.infer.load import load_workdir


def test_bench_generate_reports_consistent_figures(trained):
    cfg, workdir = trained
    proc = run_cli("bench", "generate", "--workdir", workdir, "--batch", "2", "--prompt-len", "6", "--new-tokens",
                   "8", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    m = cfg.model
    loaded = load_workdir(workdir)
    assert out["param_bytes"] == sum(x.nbytes for x in jax.tree.leaves(loaded.params))
    slots = min(m.seq_len, 64)  # prompt + new tokens, rounded up to 64, at most the context
    assert out["cache_bytes"] == 2 * m.n_layers * 2 * slots * m.n_kv_heads * m.head_dim * 4  # K and V, float32
    assert out["decode_tokens_per_sec"] == pytest.approx(2 / out["tpot_s"])
    assert out["cached_speedup"] == pytest.approx(out["uncached_tpot_s"] / out["tpot_s"])
    assert out["bandwidth_fraction"] == pytest.approx(
        (out["param_bytes"] + out["cache_bytes"]) / out["tpot_s"] / out["bandwidth_ceiling_bytes_per_sec"])
    for key in ("ttft_s", "tpot_s", "uncached_tpot_s", "bandwidth_ceiling_bytes_per_sec"):
        assert out[key] > 0, key


def test_bench_generate_refuses_what_does_not_fit(trained):
    _, workdir = trained
    proc = run_cli("bench", "generate", "--workdir", workdir, "--prompt-len", "10", "--new-tokens", "10")
    assert proc.returncode == 2 and "exceeds the model's context of 16 tokens" in proc.stderr
    proc = run_cli("bench", "generate")
    assert proc.returncode == 2 and "needs --workdir" in proc.stderr


def test_eval_passkey_refuses_lengths_that_cannot_hold_the_task(trained):
    """(The scores themselves: tests/interop/test_gguf.py, on a model that retrieves.)"""
    _, workdir = trained
    proc = run_cli("eval", "passkey", "--workdir", workdir, "--lengths", "16")
    assert proc.returncode == 2 and "passkey examples of 16 tokens need more room" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2  # the one error (after the attention choice line at most)
    proc = run_cli("eval", "passkey", "--workdir", workdir, "--lengths", "64")
    assert proc.returncode == 2 and "--lengths 64 exceeds the model's context of 16 tokens" in proc.stderr
