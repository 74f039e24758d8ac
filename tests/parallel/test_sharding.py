"""Layout invariance on 8 fake CPU devices: every (stage, data, fsdp, tensor) mesh — pipelined or not, with
or without gradient accumulation, one slice or two — gives the 1-device losses, and so do an MoE model (dropless
and capacity paths) on meshes with an expert axis, an encoder-decoder trained with span corruption and an encoder
trained with MLM on (data 2, fsdp 2, tensor 2), and context parallelism (2 and 4 pieces of every sequence, with
fsdp, tensor and pipeline stages; causal and document masks); FSDP divides parameter + optimizer memory."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO

SCRIPT = os.path.join(REPO, "tests", "parallel", "sharded_run.py")
DATA_LAYOUTS = ["8,1,1", "1,8,1", "2,2,2", "1,2,4"]
PIPELINE_LAYOUTS = ["2,2,2,1", "4,1,1,2", "2,1,1,4", "8,1,1,1"]
MULTI_SLICE = ["1,1,2,2@2", "2,1,2,1@2"]  # two slices joined over DCN on the data axis
MOE_LAYOUTS = [f"{v}:{m}" for v in ("moe", "moecap") for m in ("2,1,4,1", "1,2,2,2")]  # data,fsdp,expert,tensor
FAMILY_LAYOUTS = ["encdec:2,2,1,2", "encoder:2,2,1,2"]  # T5-like with span corruption, BERT-like with MLM
# context parallelism (data,fsdp,expert,tensor,context[,stage]): 2 and 4 pieces, with fsdp and tensor, with pipeline
# stages; causal and document masks, the xla and the blockwise paths
CONTEXT_LAYOUTS = [f"{v}:{m}" for v in ("ctx", "ctxdoc") for m in ("4,1,1,1,2", "2,1,1,1,4", "1,2,1,2,2")] + [
    "ctxdoc:2,1,1,1,2,2", "ctxbw:2,1,1,1,4"]
LAYOUTS = (DATA_LAYOUTS + PIPELINE_LAYOUTS + [f"{p}/2" for p in PIPELINE_LAYOUTS] + ["2,2,2,1/1/2", "4,1,1,2/2/2"]
           + MULTI_SLICE + MOE_LAYOUTS + FAMILY_LAYOUTS + CONTEXT_LAYOUTS)


def start_layouts(layouts, devices) -> subprocess.Popen:
    flags = f"--xla_force_host_platform_device_count={devices}"
    code = f"import sys, runpy; sys.argv = ['x'] + {list(layouts)!r}; runpy.run_path({SCRIPT!r}, run_name='__main__')"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu"))


def collect(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err[-3000:]
    return {r["layout"]: r for r in json.loads(out.strip().splitlines()[-1])}


@pytest.fixture(scope="module")
def results():
    """(one-device runs, 8-device runs): three processes at once (compilation is mostly single-threaded, so the
    two halves of the 8-device layouts share the 2 cores better than one process running them in turn)."""
    variants = sorted({layout.split(":")[0] + ":1,1,1,1" for layout in MOE_LAYOUTS + FAMILY_LAYOUTS + CONTEXT_LAYOUTS})
    procs = [start_layouts(["1,1,1", "1,1,1/2"] + variants, devices=1),
             start_layouts(LAYOUTS[0::2], devices=8), start_layouts(LAYOUTS[1::2], devices=8)]
    try:
        reference, *halves = [collect(p) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return reference, {**halves[0], **halves[1]}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_losses_match_one_device_within_1e_5(results, layout):
    reference, sharded = results
    parts = layout.split("/")
    ref = reference["1,1,1/2" if len(parts) > 1 and parts[1] == "2" else "1,1,1"]  # same accumulation
    if ":" in layout:  # a model variant: its own one-device run
        ref = reference[layout.split(":")[0] + ":1,1,1,1"]
    assert len(ref["losses"]) == 10 and np.isfinite(ref["losses"]).all()
    if layout.startswith("encoder:"):  # MLM on 15% of the tokens moves slower in 10 steps
        assert np.ptp(ref["losses"]) > 0.05
    else:
        assert ref["losses"][-1] < ref["losses"][0] - 0.3  # the model learns: losses really move
    np.testing.assert_allclose(sharded[layout]["losses"], ref["losses"], atol=1e-5, rtol=0)


def test_fsdp_divides_parameter_and_optimizer_memory_by_8(results):
    _, sharded = results
    memory = sharded["1,8,1"]["memory"]
    per_device_state = memory["argument_bytes"] - memory["batch_bytes"]
    assert per_device_state <= memory["total_state_bytes"] / 8 * 1.05, memory
    replicated = sharded["8,1,1"]["memory"]  # pure data parallelism keeps a full copy per device
    assert replicated["argument_bytes"] - replicated["batch_bytes"] >= 0.95 * replicated["total_state_bytes"]
    staged = sharded["8,1,1,1"]["memory"]  # 8 stages: each device holds one eighth of the layer stack
    assert staged["argument_bytes"] < 0.5 * staged["total_state_bytes"]


def test_the_capacity_path_exchanges_tokens_by_all_to_all_over_the_expert_axis(results):
    _, sharded = results
    assert sharded["moecap:2,1,4,1"]["all_to_all"] > 0   # expert parallelism: tokens travel to their experts
    assert sharded["moe:2,1,4,1"]["all_to_all"] == 0     # dropless: a global sort, tokens gathered instead


def test_context_parallelism_splits_every_sequence(results):
    _, sharded = results
    assert sharded["ctx:2,1,1,1,4"]["shard_shape"] == [16, 4]   # 32 rows over data 2, 16 positions over context 4
    assert sharded["ctxdoc:1,2,1,2,2"]["shard_shape"] == [16, 8]
