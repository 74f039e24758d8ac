"""train.eval_tasks: downstream tasks scored during training (config rules, the loop's metrics, sweep report)."""

import json

import pytest

from helpers import small_config
from llm_jax import config as config_lib


def _cfg(tasks, config=None, **model):
    cfg = small_config(**model) if config is None else config
    with cfg.train.ignore_type():
        cfg.train.eval_tasks = tasks
    cfg = config_lib.resolve(cfg)
    config_lib.validate(cfg)
    return cfg


@pytest.mark.parametrize("tasks, message", [
    ([{"kind": "choise", "path": "a.jsonl"}], "train.eval_tasks[0]: kind='choise' must be one of 'choice', 'generate'"),
    ([{"kind": "choice"}], "train.eval_tasks[0]: needs a 'path'"),
    ([{"kind": "choice", "path": "a.jsonl", "limt": 5}], "unknown key 'limt' (did you mean limit?)"),
    ([{"kind": "choice", "path": "a.jsonl", "style": "cot"}], "unknown key 'style'"),  # generate only
    ([{"kind": "choice", "path": "shakespeare:sonnets"}], "the generated Shakespeare tasks are"),
    ([{"kind": "choice", "path": "a.jsonl"}, {"kind": "choice", "path": "b/a.json"}], "name 'a' is used twice"),
    ([{"kind": "choice", "path": "a.jsonl", "limit": -1}], "limit=-1 must be an integer >= 0"),
    ([{"kind": "generate", "path": "g.jsonl", "max_new_tokens": 16}], "max_new_tokens=16 must be an integer in"),
    ([{"kind": "choice", "path": "a.jsonl", "name": "a/b"}], "name='a/b': must be letters"),
    (["a.jsonl"], "train.eval_tasks[0]='a.jsonl': must be a dict"),
])
def test_bad_entries_are_one_clear_config_error(tasks, message):
    with pytest.raises(config_lib.ConfigError) as e:
        _cfg(tasks)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_entries_get_their_defaults_and_survive_config_json():
    cfg = config_lib.load_config(None, {"train.eval_tasks": str([
        {"kind": "choice", "path": "shakespeare:next_line"}, {"kind": "generate", "path": "data/gsm.jsonl"}])})
    choice, generate = cfg.train.eval_tasks
    assert choice == {"kind": "choice", "path": "shakespeare:next_line", "name": "shakespeare_next_line",
                      "num_fewshot": 0, "limit": 100, "fmt": "auto"}
    assert generate["name"] == "gsm" and generate["style"] == "plain" and generate["max_new_tokens"] == 128
    again = config_lib.config_from_json(config_lib.to_json(cfg))
    config_lib.validate(again)
    assert list(again.train.eval_tasks) == list(cfg.train.eval_tasks)


def test_non_decoder_families_are_refused():
    cfg = small_config("mlm", family="encoder")
    with pytest.raises(config_lib.ConfigError, match="decoder-only model, not model.family='encoder'"):
        _cfg([{"kind": "choice", "path": "a.jsonl"}], config=cfg)


def test_lists_match_the_eval_package():
    from llm_jax.eval import shakespeare, tasks
    assert config_lib.EVAL_TASK_KINDS == tasks.KINDS
    assert tuple(f"shakespeare_{t}" for t in config_lib.SHAKESPEARE_TASKS) == shakespeare.TASKS


def _choice_file(path, n=12):
    """Which of three words follows a short phrase: real words, so a trained model and chance differ."""
    rows = [{"context": f"To be, or not to be{'!' * (i % 3)}", "choices": ["that", "the", "lord"], "label": i % 3}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_training_logs_task_metrics_equal_to_scoring_the_saved_checkpoint(small_corpus, tmp_path):
    """At steps 0, 10 and 20 (eval_every=10, the end) metrics.jsonl carries eval/<name>/acc etc.; the final ones are
    exactly what `run_task` gives on the checkpoint the run saved, loaded back from disk."""
    from llm_jax.eval.in_training import task_runner
    from llm_jax.eval.lm import EvalModel
    from llm_jax.eval.tasks import run_task
    from llm_jax.infer.load import load_workdir
    from llm_jax.train.loop import train
    from llm_jax.train.metrics import read_metrics

    path = _choice_file(tmp_path / "phrase.jsonl")
    cfg = small_config()
    cfg.data.corpus, cfg.model.vocab_size = small_corpus, 384
    cfg = _cfg([{"kind": "choice", "path": path, "limit": 10},
                {"kind": "choice", "path": "shakespeare:speaker", "limit": 8}], config=cfg)
    workdir, lines = str(tmp_path / "run"), []
    summary = train(cfg, workdir, log=lines.append, task_runner=task_runner)

    rows = [r for r in read_metrics(workdir) if "eval/phrase/acc" in r]
    assert [r["step"] for r in rows] == [0, 10, 20]
    for r in rows:
        assert r["eval/phrase/n"] == 10 and r["eval/shakespeare_speaker/n"] == 8
        assert all(0 <= r[f"eval/{t}/{m}"] <= 1 for t in ("phrase", "shakespeare_speaker") for m in ("acc", "acc_norm"))
        assert not any(k.endswith(("loglikelihoods", "completions")) for k in r)
    assert sum(line.startswith("step 20 | tasks: phrase acc") for line in lines) == 1
    assert summary["eval/phrase/acc"] == rows[-1]["eval/phrase/acc"]

    model = EvalModel(load_workdir(workdir, log=lambda _: None))
    assert model.loaded.step == 20
    for name, path, limit in (("phrase", path, 10),
                              ("shakespeare_speaker", f"{workdir}/eval_tasks/shakespeare_speaker.jsonl", 8)):
        result = run_task(model, "choice", path, limit=limit)
        for metric in ("acc", "acc_norm", "acc_stderr", "f1", "n"):
            if metric in result:
                assert rows[-1][f"eval/{name}/{metric}"] == result[metric], (name, metric)


def test_eval_tasks_need_a_task_runner_and_readable_files(small_corpus, tmp_path):
    from llm_jax.errors import UserError
    from llm_jax.eval.in_training import task_runner
    from llm_jax.train.loop import train
    cfg = small_config()
    cfg.data.corpus, cfg.model.vocab_size = small_corpus, 384
    cfg = _cfg([{"kind": "choice", "path": str(tmp_path / "missing.jsonl")}], config=cfg)
    with pytest.raises(config_lib.ConfigError, match="passed no task_runner"):
        train(cfg, str(tmp_path / "a"), log=lambda _: None)
    with pytest.raises(UserError, match="train.eval_tasks 'missing'"):
        train(cfg, str(tmp_path / "b"), log=lambda _: None, task_runner=task_runner)


def test_sweep_report_adds_the_downstream_columns(tmp_path):
    from llm_jax.sweep import Sweep
    from llm_jax.sweep.report import report
    sweep = Sweep(name="d", base="configs/ablation.py", variants={"a": {}, "b": {"model.norm": "rmsnorm"}},
                  seeds=[0, 1], runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    accs = {"a-seed0": 0.25, "a-seed1": 0.35, "b-seed0": 0.5, "b-seed1": 0.5}
    for member, acc in accs.items():
        wd = tmp_path / "runs" / member
        wd.mkdir(parents=True)
        (wd / "sweep_member.json").write_text("{}")
        rows = [{"step": 0, "tokens_seen": 0, "eval_loss": 7.0, "eval/next/acc": 0.2, "eval/next/n": 100.0},
                {"step": 400, "tokens_seen": 1000, "eval_loss": 4.0, "eval/next/acc": acc, "eval/next/n": 100.0,
                 "eval/next/acc_norm": 0.1, "eval/gsm/exact_match_flexible": 0.5, "eval/gsm/exact_match_strict": 0.0}]
        (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = report(sweep, "sweep.py", log=lambda _: None)
    text = (tmp_path / "results" / "README.md").read_text()
    assert "| final eval loss | best eval loss | next acc | gsm exact_match_strict | tokens/s |" in text
    assert "| 0.3000 ± 0.0707 | 0.0000 ± 0.0000 |" in text and "| 0.5000 ± 0.0000 | 0.0000 ± 0.0000 |" in text
    assert out["variants"][0]["downstream"]["eval/next/acc"] == pytest.approx((0.3, 0.0707), abs=1e-4)
    members_csv = (tmp_path / "results" / "members.csv").read_text().splitlines()
    assert "eval/next/acc" in members_csv[0] and "eval/gsm/exact_match_flexible" in members_csv[0]


def test_two_processes_score_on_process_0_as_the_saved_checkpoint_scores(small_corpus, tmp_path):
    """Two processes of four devices (data 2 x fsdp 2 x tensor 2): the parameters are gathered and process 0
    scores them; its final numbers equal run_task on the checkpoint, and process 1 logs no task line."""
    import os
    import subprocess
    import sys

    from helpers import REPO
    from llm_jax.eval.lm import EvalModel
    from llm_jax.eval.tasks import run_task
    from llm_jax.infer.load import load_workdir
    from llm_jax.train.metrics import read_metrics

    path = _choice_file(tmp_path / "phrase.jsonl")
    workdir = tmp_path / "two"
    tasks = [{"kind": "choice", "path": path, "limit": 10}]
    args = ["--workdir", str(workdir), f"--config.data.corpus={small_corpus}", "--config.model.vocab_size=384",
            "--config.model.seq_len=16", "--config.model.d_model=32", "--config.model.n_layers=2",
            "--config.model.n_heads=4", "--config.train.steps=8", "--config.train.batch_size=8",
            "--config.train.warmup_steps=2", "--config.train.log_every=4", "--config.train.eval_every=0",
            "--config.train.eval_batches=2", "--config.checkpoint.every=8", "--config.mesh.data=2",
            "--config.mesh.fsdp=2", "--config.mesh.tensor=2", f"--config.train.eval_tasks={tasks}"]
    env = dict(os.environ, PYTHON=sys.executable, LOCAL_DEVICES="4")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(["bash", "launch/local.sh", "2", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "[0] step 8 | tasks: phrase acc" in proc.stdout and "[1] step 8 | tasks" not in proc.stdout
    rows = [r for r in read_metrics(str(workdir)) if "eval/phrase/acc" in r]
    assert [r["step"] for r in rows] == [0, 8]
    result = run_task(EvalModel(load_workdir(str(workdir), log=lambda _: None)), "choice", path, limit=10)
    assert {m: rows[-1][f"eval/phrase/{m}"] for m in ("acc", "acc_norm", "n")} == \
        {m: result[m] for m in ("acc", "acc_norm", "n")}
