import numpy as np
import pytest

from llm_jax.config import default_config
from llm_jax.data.filters import CharNgram, heuristic_reason, perplexity_mask


def rules(**kw):
    f = default_config().data.filter
    f.update(kw)
    return f


def test_heuristics_name_the_rule_broken():
    assert heuristic_reason("short", rules(min_chars=10)) == "too_short"
    assert heuristic_reason("x" * 50, rules(max_chars=10)) == "too_long"
    assert heuristic_reason("two words", rules(min_words=3)) == "too_few_words"
    assert heuristic_reason("1234 5678 $$$ ab", rules(min_alpha_fraction=0.5)) == "low_alpha_fraction"
    assert heuristic_reason("same\nsame\nsame\nother", rules(max_duplicate_line_fraction=0.3)) == "repeated_lines"
    assert heuristic_reason("A perfectly fine sentence.", rules(min_chars=5, min_words=2)) is None


def test_char_ngram_prefers_text_like_its_training_data():
    english = ["the quick brown fox jumps over the lazy dog and the cat sat on the mat"] * 50
    model = CharNgram(order=4).fit(english)
    assert model.perplexity("the cat sat on the dog") < model.perplexity("zxq vvk jjq wpx qqz")
    probs = [model._prob("th", c) for c in sorted(model.alphabet)]
    unseen = model._prob("th", "\u2603")  # one share of mass is kept for characters never seen
    assert sum(probs) + unseen == pytest.approx(1.0)


def test_perplexity_mask():
    scores = np.array([10.0, 20.0, 30.0, 400.0])
    assert perplexity_mask(scores, 100.0, 0.0).tolist() == [False, False, False, True]
    assert perplexity_mask(scores, 0.0, 0.5).tolist() == [False, False, True, True]


def test_cross_fitting_keeps_memorisable_junk_from_scoring_well():
    from llm_jax.data.filters import cross_fitted_perplexity
    rng = np.random.RandomState(0)
    prose = ["the cat sat on the mat and the dog lay by the door of the house"] * 10
    junk = ["".join(rng.choice(list("#%&*0123456789qzx"), 200)) for _ in range(2)]
    scores = cross_fitted_perplexity(prose + junk)
    assert scores[-2:].min() > 3 * scores[:-2].max()
