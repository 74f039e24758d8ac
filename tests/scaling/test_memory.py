import json
import os

import pytest

from helpers import REPO, run_cli
from llm_jax.config import load_config
from llm_jax.scaling.memory import TopologyError, estimate, parameter_bytes_per_device, parse_topology


def test_topologies_count_chips_not_cores():
    assert parse_topology("v5p-256")["chips"] == 128 and parse_topology("v4-128")["chips"] == 64
    assert parse_topology("v5e-64")["chips"] == 64 and parse_topology("h100-16")["device_kind"] == "H100"
    with pytest.raises(TopologyError, match="expected NAME-COUNT"):
        parse_topology("v9x-8")
    with pytest.raises(TopologyError, match="2 cores per chip"):
        parse_topology("v5p-3")


def test_parameter_shards_follow_the_rules():
    cfg = load_config(os.path.join(REPO, "configs", "gpt2_small.py"), {"mesh.fsdp": "-1", "mesh.data": "1"},
                      n_devices=8)
    whole = 124_439_808 * 4
    sharded = parameter_bytes_per_device(cfg, {"stage": 1, "data": 1, "fsdp": 8, "expert": 1, "context": 1,
                                               "tensor": 1})
    assert whole / 8 <= sharded <= whole / 8 * 1.01  # every weight has an `embed` axis over fsdp
    replicated = parameter_bytes_per_device(cfg, {"stage": 1, "data": 8, "fsdp": 1, "expert": 1, "context": 1,
                                                  "tensor": 1})
    assert replicated == whole


def test_estimate_for_a_pod_and_the_step_time():
    cfg = load_config(os.path.join(REPO, "configs", "llama_7b.py"), n_devices=128)
    out = estimate(cfg, 128, peak_flops=459e12, hbm_bytes=95 * 2**30, mfu=0.5)
    assert out["mesh"]["fsdp"] == 128 and out["fits"]
    mem = out["per_device_bytes"]
    assert mem["optimizer_state"] == 2 * mem["params"] and mem["total"] == sum(v for k, v in mem.items() if k != "total")
    expected = out["flops_per_token"] * 1024 * 4096 / (459e12 * 128 * 0.5)
    assert out["step_seconds"] == pytest.approx(expected)
    days = expected * cfg.train.steps / 86400
    assert out["training_days"] == pytest.approx(days) and out["device_hours"] == pytest.approx(days * 24 * 128)


@pytest.mark.parametrize("devices, mesh", [(1, []), (8, ["--config.mesh.data=1", "--config.mesh.fsdp=8"])])
def test_estimate_agrees_with_the_compiled_step(devices, mesh, tmp_path):
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    proc = run_cli("estimate", "--config", "configs/tiny.py", "--devices", devices, "--json", *mesh, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    est = json.loads(proc.stdout.strip().splitlines()[-1])["per_device_bytes"]
    proc = run_cli("compile", "--config", "configs/tiny.py", "--out", tmp_path, "--json", *mesh, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    compiled = json.loads(proc.stdout.strip().splitlines()[-1])
    batch = 3 * 8 * 256 * 4 // devices  # inputs, targets, segment ids (int32)
    state = compiled["argument_bytes"] - batch
    assert abs(est["params"] + est["optimizer_state"] - state) / state < 0.05, (est, compiled)
    transient = est["gradients"] + est["activations"]
    assert 0.5 < transient / compiled["temp_bytes"] < 2.0, (est, compiled)


def test_estimate_prices_a_run_for_a_topology():
    proc = run_cli("estimate", "--config", "configs/llama_7b.py", "--topology", "v5p-128",
                   "--price-per-device-hour", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cost"] == pytest.approx(2 * out["device_hours"])
    assert out["training_flops"] == pytest.approx(out["flops_per_token"] * out["tokens_per_step"] * 250_000)


def test_attention_memory_by_implementation_and_context_sharding():
    """The xla path's L x L scores bound the context; the blockwise path and context parallelism lift it."""
    def longest(platform="cpu", **overrides):
        cfg = load_config(os.path.join(REPO, "configs", "llama_1b.py"), overrides, n_devices=16)
        return estimate(cfg, 16, peak_flops=None, hbm_bytes=16 * 2**30, mfu=0.5, platform=platform)
    xla, flash, splash = longest(**{"model.attention_impl": "xla"}), longest(), longest("tpu")
    assert (xla["attention_impl"], flash["attention_impl"], splash["attention_impl"]) == ("xla", "blockwise", "splash")
    assert splash["longest_context"] == flash["longest_context"]  # neither keeps a score matrix
    assert xla["per_device_bytes"]["activations"] > 2 * flash["per_device_bytes"]["activations"]
    assert xla["longest_context"] < flash["longest_context"]
    split = longest(**{"mesh.context": "4", "mesh.fsdp": "-1", "mesh.data": "1"})
    assert split["mesh"]["context"] == 4 and split["longest_context"] == 4 * flash["longest_context"]
