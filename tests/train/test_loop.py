import json
import os

import numpy as np
import pytest

from helpers import small_config
from llm_jax.train.loop import TrainingError, train
from llm_jax.train.metrics import read_metrics

REQUIRED = {"step", "loss", "learning_rate", "grad_norm", "tokens_seen", "tokens_per_sec", "mfu"}


def corpus_config(corpus, **model):
    cfg = small_config(**model)
    cfg.data.corpus = corpus
    cfg.model.vocab_size = 384
    return cfg


@pytest.fixture(scope="module")
def run(small_corpus, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    logs = []
    cfg = corpus_config(small_corpus)
    summary = train(cfg, workdir, log=logs.append)
    return workdir, cfg, summary, logs


def test_outputs_in_the_work_directory(run):
    workdir, cfg, summary, logs = run
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f) == json.loads(cfg.to_json())
    assert os.path.isfile(os.path.join(workdir, "tokenizer.model"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20"]
    events = os.listdir(os.path.join(workdir, "tensorboard"))
    assert any(name.startswith("events.out.tfevents") for name in events)


def test_metrics_jsonl_has_the_contract_keys(run):
    workdir, _, summary, _ = run
    records = read_metrics(workdir)
    assert [r["step"] for r in records] == [0, 5, 10, 15, 20]
    for r in records[2:]:  # the first logged interval after compilation may have no timing yet
        assert REQUIRED <= set(r), set(r)
    evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
    assert sorted(evals) == [0, 10, 20]
    assert evals[20] < evals[0] - 0.5  # it learned
    assert records[-1]["tokens_seen"] == 20 * 8 * 16
    assert summary["eval_loss"] == evals[20]


def test_console_reports_progress_and_entropy(run):
    _, _, summary, logs = run
    assert any("step 0 | eval" in line and "unigram entropy" in line for line in logs)
    progress = [line for line in logs if line.startswith("step 15/20")]
    assert progress and all(k in progress[0] for k in ("loss", "lr", "tok/s", "MFU", "ETA"))
    assert "validation loss" in logs[-1] and "unigram entropy" in logs[-1]


def test_resume_continues_from_the_latest_checkpoint_and_appends(run, small_corpus):
    workdir, cfg, _, _ = run
    longer = corpus_config(small_corpus)
    longer.train.steps = 30
    logs = []
    train(longer, workdir, log=logs.append)
    assert any("resuming from the checkpoint at step 20" in line for line in logs)
    steps = [r["step"] for r in read_metrics(workdir)]
    assert steps == [0, 5, 10, 15, 20, 25, 30]
    logs = []
    train(longer, workdir, log=logs.append)  # already done: nothing to train
    assert any("already at step 30" in line for line in logs)


def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run_bit_for_bit(small_corpus, tmp_path):
    import shutil
    cfg = corpus_config(small_corpus, dropout=0.1)
    cfg.train.update(steps=20, log_every=5, eval_every=0)
    cfg.data.prefetch = 2
    full = tmp_path / "full"
    train(cfg, str(full), log=lambda _: None)
    resumed = tmp_path / "resumed"  # the state an interruption after step 10's checkpoint leaves behind
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints" / "20")
    lines = (resumed / "metrics.jsonl").read_text().splitlines()
    (resumed / "metrics.jsonl").write_text("\n".join(l for l in lines if json.loads(l)["step"] <= 10) + "\n")
    logs = []
    train(cfg, str(resumed), log=logs.append)
    assert any("resuming from the checkpoint at step 10" in line for line in logs)
    keys = ("loss", "grad_norm", "learning_rate", "eval_loss")
    pick = lambda records: [{k: r.get(k) for k in keys} for r in records if r["step"] > 10]
    assert pick(read_metrics(str(resumed))) == pick(read_metrics(str(full)))
    assert len(pick(read_metrics(str(full)))) == 2


def test_checkpoints_hold_the_loader_position_and_a_data_change_is_reported(run, small_corpus):
    from llm_jax import checkpoint
    workdir, _, _, _ = run
    mngr = checkpoint.manager(workdir)
    state = checkpoint.restore_data_state(mngr, mngr.latest_step())
    mngr.close()
    assert state["step"] == mngr.latest_step() and state["seed"] == 0 and len(state["fingerprint"]) == 16
    changed = corpus_config(small_corpus)
    changed.train.steps = 35
    changed.data.val_fraction = 0.2  # re-prepared data: different splits, different fingerprint
    logs = []
    train(changed, workdir, log=logs.append)
    assert any("the data changed since the checkpoint" in line for line in logs)


def test_a_different_model_in_the_same_workdir_is_refused(run, small_corpus):
    workdir, _, _, _ = run
    other = corpus_config(small_corpus, d_model=64)
    before = sorted(os.listdir(workdir)), open(os.path.join(workdir, "config.json")).read()
    with pytest.raises(TrainingError, match=r"cannot resume .* model.d_model: 32 -> 64.*--restart"):
        train(other, workdir, log=lambda _: None)
    assert (sorted(os.listdir(workdir)), open(os.path.join(workdir, "config.json")).read()) == before
