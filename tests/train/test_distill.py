"""Knowledge distillation: the loss against the formula computed here with numpy, and an online run in which the
student's KL to the teacher falls; a student tokenizing differently from its teacher is refused."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from helpers import small_config
from llm_jax import config as config_lib
from llm_jax.models import build_model
from llm_jax.objectives import get_objective
from llm_jax.train.state import init_params


def test_distill_loss_is_the_formula():
    cfg = small_config()
    cfg.train.update(objective="distill", teacher="t", distill_alpha=0.3, distill_temperature=2.0, distill_top_k=5)
    model = build_model(cfg.model)
    params = nn.unbox(init_params(model, 16, jax.random.key(0)))
    rng = np.random.default_rng(0)
    inputs, targets = (rng.integers(0, 256, (2, 16)).astype(np.int32) for _ in range(2))
    ids = np.stack([rng.permutation(256)[:5] for _ in range(32)]).reshape(2, 16, 5).astype(np.int32)
    raw = rng.normal(size=(2, 16, 5))
    teacher = raw - np.log(np.exp(raw).sum(-1, keepdims=True)) + np.log(0.8)  # the top 5 hold 0.8: 0.2 elsewhere
    batch = {"inputs": inputs, "targets": targets, "segment_ids": np.zeros((2, 16), np.int32), "teacher_ids": ids,
             "teacher_logps": teacher.astype(np.float32)}
    losses, weights, sown = get_objective("distill", cfg.train).losses(model, params, batch, None, True)
    logits = np.asarray(model.apply({"params": params}, inputs), np.float64)
    log_softmax = lambda x: x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))  # noqa: E501, E731
    ce = -np.take_along_axis(log_softmax(logits), targets[..., None], -1)[..., 0]
    student = np.take_along_axis(log_softmax(logits / 2.0), ids, -1)
    student_rest = 1 - np.exp(student).sum(-1)  # the student's mass outside the teacher's top 5
    kl = (np.exp(teacher) * (teacher - student)).sum(-1) + 0.2 * (np.log(0.2) - np.log(student_rest))
    np.testing.assert_allclose(np.asarray(losses), 0.3 * ce + 0.7 * 4.0 * kl, rtol=1e-4, atol=1e-5)
    assert float(sown.stats["distill_kl"]) == pytest.approx(kl.mean(), rel=1e-4)


def test_online_and_offline_distillation_pull_the_student_to_the_teacher(trained, small_corpus, tmp_path):
    """Online (the teacher on each batch) and offline (`distill dump`, then the dump streamed) give the same run;
    trained on the soft target alone (alpha 0), the student's held-out KL to the teacher falls."""
    from llm_jax.train.loop import train
    from llm_jax.train.teacher import TeacherError, dump
    _, teacher = trained
    tokenizer = next(os.path.join(teacher, f) for f in ("tokenizer.model", "tokenizer.json", "tokenizer_llm_jax.json")
                     if os.path.isfile(os.path.join(teacher, f)))
    sets = {"train.objective": "distill", "train.teacher": teacher, "data.corpus": small_corpus,
            "data.tokenizer": tokenizer, "model.vocab_size": "384", "model.seq_len": "16", "model.d_model": "16",
            "model.n_layers": "1", "model.n_heads": "2", "train.steps": "30", "train.batch_size": "8",
            "train.warmup_steps": "2", "train.log_every": "5", "train.eval_every": "0", "train.eval_batches": "2",
            "train.distill_top_k": "8", "train.distill_alpha": "0.0", "train.lr": "1e-2"}
    lines = []
    summary = train(config_lib.load_config(None, sets), str(tmp_path / "student"), log=lines.append)
    assert any(line.startswith("distill: teacher") for line in lines), lines
    logged = [json.loads(line) for line in open(tmp_path / "student" / "metrics.jsonl") if "stats/distill_kl" in line]
    first = json.loads(open(tmp_path / "student" / "metrics.jsonl").readline())  # step 0: T^2 KL, held out
    assert first["step"] == 0 and summary["eval_loss"] < 0.7 * first["eval_loss"], (first, summary)
    info = dump(config_lib.load_config(None, sets), str(tmp_path / "dump"), log=lambda _: None)
    assert info["train_steps"] == 30 and info["top_k"] == 8
    offline_lines = []
    train(config_lib.load_config(None, {**sets, "train.teacher": str(tmp_path / "dump")}), str(tmp_path / "offline"),
          log=offline_lines.append)
    assert any(line.startswith("distill: teacher dump") for line in offline_lines), offline_lines
    offline = [json.loads(line) for line in open(tmp_path / "offline" / "metrics.jsonl") if "stats/distill_kl" in line]
    np.testing.assert_allclose([r["stats/distill_kl"] for r in offline], [r["stats/distill_kl"] for r in logged],
                               rtol=1e-5)
    with pytest.raises(TeacherError, match="dump of other batches: batch_size 8 there, 4 here"):
        train(config_lib.load_config(None, {**sets, "train.teacher": str(tmp_path / "dump"), "train.batch_size": "4"}),
              str(tmp_path / "other"), log=lambda _: None)
    with pytest.raises(TeacherError, match="set data.tokenizer to the teacher's tokenizer"):
        train(config_lib.load_config(None, {**sets, "data.tokenizer": "", "data.tokenizer_kind": "char"}),
              str(tmp_path / "mismatch"), log=lambda _: None)
