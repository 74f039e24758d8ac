import pytest

from llm_jax.sweep.report import variant_rows


def test_variant_rows_average_over_seeds_with_sample_std():
    rows = [dict(variant="a", params=10, active_params=10, non_embedding_params=5, tokens=100, flops=1e6, final_eval_loss=l,
                 best_eval_loss=l - 0.1, tokens_per_sec=s) for l, s in ((4.0, 100.0), (4.2, 300.0))]
    rows.append(dict(rows[0], variant="b", final_eval_loss=3.0))
    a, b = variant_rows(rows)
    assert a["variant"] == "a" and a["seeds"] == 2
    assert a["final_eval_loss"][0] == pytest.approx(4.1) and a["final_eval_loss"][1] == pytest.approx(0.1414, rel=1e-3)
    assert a["tokens_per_sec"] == pytest.approx((200.0, 141.42), rel=1e-4)
    assert b["seeds"] == 1 and b["final_eval_loss"] == (3.0, 0.0)


def test_unfinished_members_are_listed_with_their_exit_status(tmp_path):
    import json

    from llm_jax.sweep import Sweep
    from llm_jax.sweep.report import _unfinished
    sweep = Sweep(name="u", base="configs/tiny.py", variants={"a": {}, "b": {}}, runs_dir=str(tmp_path))
    (tmp_path / "a-seed0").mkdir()
    (tmp_path / "a-seed0" / "attempts.jsonl").write_text(json.dumps({"returncode": 1, "wall_seconds": 3}) + "\n")
    (tmp_path / "a-seed0" / "train.log").write_text("step 10\nerror: non-finite loss at step 12\n")
    text = _unfinished(sweep)
    assert "`a-seed0`: exit status 1 after 1 attempt(s): error: non-finite loss at step 12" in text
    assert "b-seed0" not in text
