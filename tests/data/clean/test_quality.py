import numpy as np
import pytest

from llm_jax.data.clean import junk
from llm_jax.data.clean.quality import (Featurizer, QualityClassifier, evaluate, held_out, make_training_set)


@pytest.fixture(scope="module")
def trained():
    from llm_jax.data.corpus import shakespeare_scenes
    docs = shakespeare_scenes()[::10]  # ~78 scenes: ~1,300 paragraphs
    train = make_training_set(0, docs, "train")
    test = make_training_set(0, docs, "test")
    return QualityClassifier().fit(*train), train, test


def test_held_out_by_document_and_deterministic():
    docs = [f"Document {i}. " + "word " * 60 for i in range(200)]
    test = [d for d in docs if held_out(d, 0, 0.2)]
    assert 20 < len(test) < 60
    pos_train, neg_train = make_training_set(0, docs, "train")
    pos_test, _ = make_training_set(0, docs, "test")
    assert not set(pos_train) & set(pos_test)
    assert len(pos_train) + len(pos_test) == len(make_training_set(0, docs, "all")[0])
    assert make_training_set(0, docs, "train") == (pos_train, neg_train)
    assert len(neg_train) == len(pos_train)


def test_features_are_sparse_normalised_and_pure():
    f = Featurizer()
    index, values = f.features("Shall I compare thee to a summer's day?")
    assert index.dtype == np.int32 and np.all(np.diff(index) > 0) and index.max() < 1 << 18
    assert np.array_equal(f.features("Shall I  compare thee to a summer's day?")[0], index)  # spaces collapsed
    assert values.dtype == np.float32 and np.all(values > 0)
    assert f.features("")[0].size == 4  # only the statistics' indicators


def test_held_out_precision_recall_and_planted_cases(trained):
    clf, _, (pos, neg) = trained
    result = evaluate(clf, pos, neg, threshold=0.5)
    assert result["precision"] >= 0.9 and result["recall"] >= 0.9, result
    junk_doc = ("Buy cheap viagra now!!! Click here: http://www.cheap-pills.biz/offer?id=123 FREE shipping! "
                "Home | About Us | Products | Contact | Login. Copyright 2024 All rights reserved. ") * 3
    assert clf.score(junk_doc) < 0.5
    assert clf.score(pos[0]) > 0.5
    rng = np.random.default_rng(0)
    for kind in junk.KINDS:  # every kind of junk is recognised, most of the time
        rejected = np.mean([clf.score(junk.make_negative(p, kind, rng)) < 0.5 for p in pos[:100]])
        assert rejected >= 0.85, (kind, rejected)


def test_save_load_round_trips_scores_exactly(trained, tmp_path):
    clf, (pos, neg), _ = trained
    path = str(tmp_path / "quality.npz")
    clf.save(path)
    loaded = QualityClassifier.load(path)
    for text in pos[:20] + neg[:20]:
        assert loaded.score(text) == clf.score(text)
    assert loaded.featurizer.params().keys() == clf.featurizer.params().keys()
