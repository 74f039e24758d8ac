from helpers import small_config
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
