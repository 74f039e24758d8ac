from helpers import run_cli, small_config
from llm_jax.train.bench import bench_train


def test_bench_reports_throughput_against_a_ceiling_measured_in_the_same_run():
    cfg = small_config()
    logs = []
    result = bench_train(cfg, steps=2, warmup=1, log=logs.append)
    for key in ("tokens_per_sec", "achieved_flops_per_sec", "ceiling_flops_per_sec", "ratio"):
        assert result[key] > 0
    assert result["ratio"] == result["achieved_flops_per_sec"] / result["ceiling_flops_per_sec"]
    assert result["achieved_flops_per_sec"] == result["tokens_per_sec"] * result["flops_per_token"]
    assert "ratio" in logs[-1]


def test_bench_attention_rows_for_every_impl_length_and_mask():
    import json
    proc = run_cli("bench", "attention", "--seq-lens", "64,128", "--masks", "causal,window_512", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
    assert [(r["impl"], r["seq_len"], r["mask"]) for r in rows][:3] == [
        ("xla", 64, "causal"), ("blockwise", 64, "causal"), ("cudnn", 64, "causal")]
    assert len(rows) == 12
    for row in rows:
        if row["impl"] == "cudnn":  # this machine has no GPU: the row says so and has no figures
            assert "not a GPU" in row["error"] and row["seconds"] is None and row["temp_bytes"] is None
        else:
            assert row["error"] is None and row["seconds"] > 0 and row["temp_bytes"] > 0
    bad = run_cli("bench", "attention", "--impls", "flash")
    assert bad.returncode == 2 and "--impls: unknown flash" in bad.stderr
