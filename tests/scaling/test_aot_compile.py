"""`llm-jax compile`: the real train step compiled ahead of time for TPU slices by the real TPU compiler (libtpu,
the `tpu` extra) on this CPU machine — the collective summary, the fit check against the chip's HBM, and the
shipped pod layouts of docs/parallelism.md (slow: about 4 min together)."""

import importlib.util
import json

import pytest

from helpers import run_cli
from llm_jax.scaling import aot
from llm_jax.scaling.aot import RECOMMENDED_LAYOUTS, CompileTargetError, collectives, torus_dims

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu is not installed (pip install -e '.[tpu]')")

LOOPED_HLO = """\
%cond (p: (s32[], f32[8])) -> pred[] {
  %constant.1 = s32[]{:T(128)} constant(6)
  %p = (s32[], f32[8]) parameter(0)
  %gte = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%gte, %constant.1), direction=LT
}

%fused_gather (param_0: f32[2,8]) -> f32[4,8] {
  %param_0 = f32[2,8]{1,0} parameter(0)
  ROOT %all-gather.3 = f32[4,8]{1,0} all-gather(%param_0), channel_id=3, dimensions={0}
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]) parameter(0)
  %f = f32[4,8]{1,0} fusion(%x), kind=kCustom, calls=%fused_gather
  %all-reduce.2 = (f32[8]{0}, bf16[16]{0}) all-reduce(%a, %b), channel_id=2, to_apply=%add
  ROOT %t = (s32[], f32[8]) tuple(%i, %y)
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  %all-reduce.1 = f32[8]{0} all-reduce(%a), channel_id=1, to_apply=%add
  %w = (s32[], f32[8]) while(%init), condition=%cond, body=%body
  %ag = ((f32[2,8]{1,0}), f32[4,8]{1,0}, u32[], u32[]) all-gather-start(%a), channel_id=4, dimensions={0}
  ROOT %r = f32[8]{0} get-tuple-element(%w), index=1
}
"""


def test_collectives_are_counted_with_their_bytes_and_loop_trip_counts():
    out = collectives(LOOPED_HLO)
    # the gather inside a fusion called from the loop body runs 6 times; the async one once (its result only)
    assert out["all-gather"] == {"count": 2, "bytes": 256, "per_step_count": 7, "per_step_bytes": 6 * 128 + 128}
    # a combined all-reduce counts every result it returns: 8 f32 + 16 bf16 = 64 bytes, six times
    assert out["all-reduce"] == {"count": 2, "bytes": 32 + 64, "per_step_count": 7, "per_step_bytes": 32 + 6 * 64}
    assert out["reduce-scatter"]["count"] == out["all-to-all"]["count"] == out["collective-permute"]["count"] == 0


SHARED_HLO = """\
%gather (param_0: f32[2,8]) -> f32[4,8] {
  ROOT %all-gather.1 = f32[4,8]{1,0} all-gather(%param_0), dimensions={0}
}

%wrapper (param_0: f32[2,8]) -> f32[4,8] {
  ROOT %f = f32[4,8]{1,0} fusion(%param_0), kind=kCustom, calls=%gather
}

%cond (p: (s32[], f32[8])) -> pred[] {
  %constant.1 = s32[] constant(5)
  ROOT %lt = pred[] compare(%gte, %constant.1), direction=LT
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %f = f32[4,8]{1,0} fusion(%x), kind=kCustom, calls=%wrapper
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %g = f32[4,8]{1,0} fusion(%a), kind=kCustom, calls=%wrapper
  %w = (s32[], f32[8]) while(%init), condition=%cond, body=%body
}
"""


def test_a_computation_called_inside_and_outside_a_loop_counts_every_call():
    # %gather runs through %wrapper once from the entry and five times from the loop body: 6 per step
    assert collectives(SHARED_HLO)["all-gather"] == {"count": 1, "bytes": 128, "per_step_count": 6,
                                                     "per_step_bytes": 6 * 128}


@pytest.mark.parametrize("chips, ndim, dims", [(4, 3, (2, 2, 1)), (8, 3, (2, 2, 2)), (64, 3, (4, 4, 4)),
                                               (128, 3, (4, 4, 8)), (256, 3, (4, 8, 8)), (16, 2, (4, 4)),
                                               (8, 2, (2, 4)), (256, 2, (16, 16))])
def test_tpu_slice_shapes(chips, ndim, dims):
    assert torus_dims(chips, ndim) == dims


def test_a_gpu_target_says_what_can_be_done_without_a_gpu():
    with pytest.raises(CompileTargetError, match="XLA's GPU compiler needs the GPU present.*llm-jax estimate"):
        aot.compile_for("configs/tiny.py", {}, "h100-8", 1, False)


def test_without_libtpu_the_command_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "libtpu" else real(name, *a))
    with pytest.raises(CompileTargetError, match=r"needs the TPU compiler \(libtpu\): pip install -e '.\[tpu\]'"):
        aot.compile_for("configs/tiny.py", {}, "v5e-8", 1, False)


def _compile(tmp_path, *args):
    proc = run_cli("compile", "--out", tmp_path, "--json", *args)
    out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    return proc, out


@needs_libtpu
def test_fsdp_gathers_weights_and_pure_data_parallelism_does_not(tmp_path):
    proc, fsdp = _compile(tmp_path / "fsdp", "--config", "configs/tiny.py", "--topology", "v5e-8",
                          "--config.mesh.data=1", "--config.mesh.fsdp=8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert fsdp["fits"] and fsdp["hbm_bytes"] == 16 * 2**30 and fsdp["mesh"]["fsdp"] == 8
    for key in ("bytes_per_chip", "argument_bytes", "output_bytes", "temp_bytes", "compiled_flops", "analytic_flops"):
        assert key in fsdp
    assert fsdp["collectives"]["all-gather"]["per_step_count"] >= 2 * 4  # each layer's weights, forward and back
    assert (tmp_path / "fsdp" / "hlo.txt").stat().st_size > 10_000 and (tmp_path / "fsdp" / "summary.json").exists()
    proc, dp = _compile(tmp_path / "dp", "--config", "configs/tiny.py", "--topology", "v5p-16",
                        "--config.mesh.data=8", "--config.mesh.fsdp=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert dp["collectives"]["all-gather"]["per_step_count"] == 0  # replicated weights: nothing to gather
    assert dp["collectives"]["all-reduce"]["per_step_count"] > 0   # the gradients are summed
    assert dp["argument_bytes"] > 4 * fsdp["argument_bytes"]       # every chip holds the whole state


@needs_libtpu
def test_a_model_too_big_for_the_slice_is_one_clear_line_and_status_1(tmp_path):
    proc, out = _compile(tmp_path, "--config", "configs/llama_70b.py", "--topology", "v5p-8")
    assert proc.returncode == 1
    assert out["fits"] is False and out["bytes_per_chip"] > out["hbm_bytes"] == 95 * 2**30
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "does not fit" in lines[0] and "GiB more than the chip's 95 GiB" in lines[0]
    assert "more chips" in lines[0]


@needs_libtpu
@pytest.mark.slow
@pytest.mark.parametrize("name", RECOMMENDED_LAYOUTS)
def test_every_recommended_pod_layout_compiles_and_fits(name, tmp_path):
    config, topology, slices, overrides = RECOMMENDED_LAYOUTS[name]
    proc, out = _compile(tmp_path, "--config", f"configs/{config}.py", "--topology", topology, "--num-slices", slices,
                         *(f"--config.{o}" for o in overrides))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out["fits"], out
    if slices > 1:
        assert out["mesh"]["data"] == slices and out["num_slices"] == slices
