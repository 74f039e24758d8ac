"""GLUE-style classification: an encoder's classification head on sentence pairs (predictions = the head's argmax
computed here directly, one example at a time), and a decoder by prompt + label words (= `eval choice`)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from llm_jax import config as config_lib
from llm_jax.errors import UserError
from llm_jax.eval import metrics
from llm_jax.eval.classify import classify_with_head, encode
from llm_jax.eval.lm import EvalModel
from llm_jax.eval.tasks import run_task
from llm_jax.infer.load import LoadedModel, load_workdir
from llm_jax.models import build_model


class Bytes:
    """A byte tokenizer with [CLS] = 1 and [SEP] = 2 (ids 3.. are bytes)."""

    def encode(self, text):
        return {"[CLS]": [1], "[SEP]": [2]}.get(text) or [3 + b for b in text.encode()][:60]


def test_encoder_head_predictions_and_metrics(tmp_path):
    cfg = config_lib.default_config()
    cfg.model.update(family="encoder", vocab_size=260, seq_len=40, d_model=32, n_layers=2, n_heads=4,
                     norm_position="post", type_vocab_size=2, num_labels=2)
    cfg.train.objective = "mlm"
    cfg = config_lib.resolve(cfg)
    model = build_model(cfg.model)
    params = model.init(jax.random.key(3), np.zeros((1, 40), np.int32))["params"]
    rows = [("A dog ran.", "An animal ran.", 0), ("It rains.", "It is sunny.", 1), ("Yes.", "No.", 1),
            ("Red car.", "A red car.", 0), ("Tea is hot.", "Tea is cold.", 1)]
    path = tmp_path / "rte.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n" + "".join(
        f"{i}\t{a}\t{b}\t{['entailment', 'not_entailment'][y]}\n" for i, (a, b, y) in enumerate(rows)))
    loaded = LoadedModel(cfg, model, params, Bytes(), 0)
    out = classify_with_head(loaded, str(path), "rte", None, batch_size=2)
    by_hand = []
    for a, b, _ in rows:  # one unpadded example at a time
        ids, types = encode(Bytes(), a, b, 40)
        assert ids[0] == 1 and ids.count(2) == 2 and types[-1] == 1
        logits = model.apply({"params": params}, np.asarray([ids]), token_types_BL=np.asarray([types]),
                             head="classify")
        by_hand.append(int(np.argmax(logits[0])))
    labels = [y for _, _, y in rows]
    assert out == metrics.classification_report(labels, by_hand) and out["n"] == 5
    headless = cfg.copy_and_resolve_references()
    headless.model.num_labels = 0
    with pytest.raises(UserError, match="classification head"):
        classify_with_head(LoadedModel(headless, model, params, Bytes(), 0), str(path), "rte", None, 2)


def test_decoder_scores_glue_by_label_words(trained, tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("sentence\tlabel\na fine film .\t1\na dull , dull film .\t0\nawful .\t0\nlovely .\t1\n")
    model = EvalModel(load_workdir(trained[1]), batch_size=4)
    out = run_task(model, "choice", str(path), fmt="sst2")
    lls = np.asarray(out["loglikelihoods"])
    predictions = lls.argmax(axis=1).tolist()
    assert out["acc"] == metrics.accuracy([1, 0, 0, 1], predictions)
    assert out["f1"] == metrics.f1([1, 0, 0, 1], predictions) and out["mcc"] == metrics.matthews([1, 0, 0, 1],
                                                                                               predictions)
