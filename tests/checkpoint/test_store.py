import json
import os

import jax
import numpy as np
import pytest
from helpers import small_config

from llm_jax import checkpoint
from llm_jax.checkpoint import seal
from llm_jax.infer.load import abstract_params
from llm_jax.models import build_model
from llm_jax.train.trainable import build_trainable


@pytest.fixture
def state_and_abstract():
    cfg = small_config()
    trainable = build_trainable(cfg)
    return cfg, trainable.init_state(seed=0), trainable.abstract


def save_steps(workdir, cfg, state, steps, **ck):
    cfg.checkpoint.update(ck)
    ckpt = checkpoint.Checkpointer(str(workdir), cfg.checkpoint, log=lambda _: None)
    for step in steps:
        ckpt.save(state.replace(step=state.step * 0 + step), {"step": step}, cfg.to_dict())
    ckpt.close()
    return ckpt


def test_full_state_params_only_and_data_state_round_trip(tmp_path, state_and_abstract):
    cfg, state, abstract = state_and_abstract
    save_steps(tmp_path, cfg, state, [7])
    ckpt = checkpoint.Checkpointer(str(tmp_path), cfg.checkpoint, log=lambda _: None)
    params, train, step = ckpt.restore_latest(abstract)
    assert step == 7 and int(train["step"]) == 7
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert checkpoint.restore_data_state(ckpt.mngr, 7) == {"step": 7}
    ckpt.close()
    restored, step = checkpoint.restore_params(
        str(tmp_path), abstract_params(build_model(cfg.model), cfg.model.seq_len))
    assert step == 7
    saved_cfg = json.load(open(tmp_path / "checkpoints" / "7" / "config" / "metadata"))
    assert saved_cfg["model"]["d_model"] == cfg.model.d_model  # the resolved config travels with the state


def test_keep_last_k_plus_every_mth(tmp_path, state_and_abstract):
    cfg, state, _ = state_and_abstract
    save_steps(tmp_path, cfg, state, [10, 20, 30, 40, 50, 60], keep=2, keep_every=20)
    assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == [20, 40, 50, 60]


@pytest.mark.fault(fault="a data file truncated (checkpoint 30) and a metadata file deleted (20)",
                   outcome="both quarantined by their seals, restore from 10")
def test_damaged_checkpoints_are_quarantined_and_the_previous_one_used(tmp_path, state_and_abstract):
    cfg, state, abstract = state_and_abstract
    save_steps(tmp_path, cfg, state, [10, 20, 30], keep=3)
    data_files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "checkpoints" / "30" / "params")
                  for f in fs if "/d/" in os.path.join(r, f)]
    with open(max(data_files, key=os.path.getsize), "r+b") as f:
        f.truncate(10)
    os.remove(next(os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "checkpoints" / "20" / "train")
                   for f in fs if f == "_METADATA"))
    logs = []
    ckpt = checkpoint.Checkpointer(str(tmp_path), cfg.checkpoint, log=logs.append)
    _, train, step = ckpt.restore_latest(abstract)
    ckpt.close()
    assert step == 10 and int(train["step"]) == 10
    assert any("checkpoint 30 is damaged" in line and "bytes" in line for line in logs)
    assert any("checkpoint 20 is damaged" in line and "missing" in line for line in logs)
    assert sorted(os.listdir(tmp_path / "checkpoints_bad"))[0].startswith("20-")


def test_a_full_disk_is_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, state_and_abstract):
    from helpers import small_disk
    cfg, state, _ = state_and_abstract
    with small_disk(tmp_path / "small", "600k") as mount:
        cfg.checkpoint.keep = 5
        ckpt = checkpoint.Checkpointer(str(mount), cfg.checkpoint, log=lambda _: None)
        with pytest.raises(checkpoint.CheckpointWriteError, match=r"cannot write the checkpoint at step \d+.*"
                                                             r"The last good checkpoint is step \d+"):
            for step in range(1, 50):  # ~200 KB each: the 600 KB disk fills within a few saves
                ckpt.save(state.replace(step=state.step * 0 + step), {"step": step}, cfg.to_dict())
        good = ckpt.last_good
        intact = checkpoint.Checkpointer(str(mount), cfg.checkpoint, log=lambda _: None)
        assert good is not None and seal.problem(os.path.join(intact.directory, str(good))) is None


def test_checkpoint_benchmark_reports_blocking_and_restore_times():
    from helpers import run_cli
    proc = run_cli("bench", "checkpoint", "--config", "configs/tiny.py", "--devices", "4", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4 and result["save_mesh"] == {"stage": 1, "data": 1, "fsdp": 4, "expert": 1,
                                                                      "context": 1, "tensor": 1}
    assert 0 < result["async_blocking_seconds"] <= result["async_total_seconds"]
    assert result["restore_seconds"] > 0  # other meshes as (stage, data, fsdp, expert, context, tensor):
    assert set(result["restore_other_mesh"]) == {"(1, 2, 2, 1, 1, 1)", "(1, 1, 2, 1, 1, 2)"}


def test_save_policy_every_n_steps_and_every_t_minutes(tmp_path, monkeypatch):
    cfg = small_config()
    cfg.checkpoint.update(every=10, every_minutes=0.5)
    clock = [1000.0]
    monkeypatch.setattr(checkpoint.store.time, "monotonic", lambda: clock[0])
    ckpt = checkpoint.Checkpointer(str(tmp_path), cfg.checkpoint, log=lambda _: None)
    assert ckpt.due(10) and ckpt.due(20) and not ckpt.due(11)
    clock[0] += 29
    assert not ckpt.due(11)
    clock[0] += 2  # 31 s since the last save
    assert ckpt.due(11)
    ckpt.close()
