import numpy as np
import pytest

from helpers import CHINCHILLA_CSV as CHINCHILLA
from llm_jax.scaling.runs import RunsError, load_runs


def test_loader_accepts_the_shared_column_names_and_params_tokens_loss(tmp_path):
    shared = load_runs(CHINCHILLA)
    assert len(shared) == 245
    assert np.allclose(shared.flops[:3], [9.993852799709755e18, 9.227541223049181e18, 9.753046550244106e18])
    simple = tmp_path / "runs.csv"
    simple.write_text("params,tokens,loss\n1e6,2e7,3.5\n2e6,1e7,3.4\n")
    runs = load_runs(str(simple))
    assert runs.params.tolist() == [1e6, 2e6] and runs.tokens.tolist() == [2e7, 1e7]
    assert runs.exclude_highest_loss(1).loss.tolist() == [3.4]


@pytest.mark.parametrize("text,problem", [
    ("params,loss\n1,2\n", "need two of"),
    ("params,tokens\n1,2\n", "no loss column"),
    ("params,tokens,loss\n1,x,2\n", "not a number"),
    ("params,tokens,loss\n1,-2,2\n", "positive"),
])
def test_loader_names_the_problem(tmp_path, text, problem):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(RunsError, match=problem):
        load_runs(str(path))


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: None, "no such file"),
    (lambda p: p.write_text(""), "no rows"),
    (lambda p: p.write_bytes(b"params,tokens,loss\n1,2,\x003\n"), "NUL bytes"),
    (lambda p: p.write_bytes(b"params,tokens,loss\n1,2,3\xff\n"), r"not UTF-8 text \(invalid byte at offset 24\)"),
    (lambda p: p.write_text("params,tokens,loss\n1,2,3\n4,5\n"), "data row 2 is shorter than the header"),
])
def test_unreadable_tables_are_one_error_naming_the_file(tmp_path, make, problem):
    path = tmp_path / "runs.csv"
    make(path)
    with pytest.raises(RunsError, match=problem) as e:
        load_runs(str(path))
    assert str(path) in str(e.value)


def test_a_byte_order_mark_does_not_hide_the_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffparams,tokens,loss\n1e6,2e7,3.5\n".encode("utf-8"))
    assert load_runs(str(path)).params.tolist() == [1e6]
