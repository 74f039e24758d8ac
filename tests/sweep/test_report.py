import pytest

from llm_jax.sweep.report import variant_rows


def test_variant_rows_average_over_seeds_with_sample_std():
    rows = [dict(variant="a", params=10, non_embedding_params=5, tokens=100, flops=1e6, final_eval_loss=l,
                 best_eval_loss=l - 0.1, tokens_per_sec=s) for l, s in ((4.0, 100.0), (4.2, 300.0))]
    rows.append(dict(rows[0], variant="b", final_eval_loss=3.0))
    a, b = variant_rows(rows)
    assert a["variant"] == "a" and a["seeds"] == 2
    assert a["final_eval_loss"][0] == pytest.approx(4.1) and a["final_eval_loss"][1] == pytest.approx(0.1414, rel=1e-3)
    assert a["tokens_per_sec"] == pytest.approx((200.0, 141.42), rel=1e-4)
    assert b["seeds"] == 1 and b["final_eval_loss"] == (3.0, 0.0)
