import numpy as np
import pytest

from llm_jax.scaling import fit, isoflop
from llm_jax.scaling.runs import Runs

TRUTH = fit.ParametricFit(E=1.7, A=400.0, B=900.0, alpha=0.33, beta=0.30, objective=0, n_points=0)


def test_approach2_finds_the_isoflop_minima_and_the_allocation_exponent():
    budgets = np.geomspace(1e18, 1e21, 4)
    rows = []
    for c in budgets:
        n_star = fit.compute_optimal(TRUTH, [c])["params"][0]
        for n in n_star * np.geomspace(0.25, 4, 9):     # sizes bracketing the optimum
            rows.append((n, c / (6 * n), c))
    n, d, c = (np.array(v) for v in zip(*rows))
    out = isoflop.approach2(Runs(n, d, TRUTH.predict(n, d), budget=c))
    assert len(out["profiles"]) == 4 and all(p["bracketed"] for p in out["profiles"])
    expected = fit.compute_optimal(TRUTH, budgets)
    got = np.array([p["params_opt"] for p in out["profiles"]])
    assert np.allclose(got, expected["params"], rtol=0.05)   # a parabola in log N is close, not exact
    assert out["a"] == pytest.approx(expected["a"], abs=0.01) and out["a"] + out["b"] == pytest.approx(1)


def test_budgets_group_by_flops_without_a_budget_column():
    n = np.array([1e6, 2e6, 4e6, 1e6, 2e6])
    c = np.array([1e15, 1.02e15, 0.99e15, 1e17, 1.01e17])
    groups = isoflop.group_budgets(Runs(n, c / (6 * n), np.ones(5)))
    assert sorted(sorted(g.tolist()) for g in groups) == [[0, 1, 2], [3, 4]]


def test_approach1_envelope_picks_the_best_curve_at_each_compute():
    sizes = [1e6, 4e6, 16e6]
    rows = []
    for i, n in enumerate(sizes):
        for d in np.geomspace(1e7, 1e10, 30):
            rows.append((f"run{i}", n, d, float(TRUTH.predict(n, d))))
    run, n, d, loss = (np.array(v) for v in zip(*rows))
    out = isoflop.approach1(Runs(n.astype(float), d.astype(float), loss.astype(float), run=run))
    env = out["envelope"]
    assert [e["params_opt"] for e in env] == sorted(e["params_opt"] for e in env)   # bigger models win later
    assert {e["params_opt"] for e in env} == set(sizes)
    assert out["a"] > 0


def test_approach1_needs_curves():
    with pytest.raises(ValueError, match="run"):
        isoflop.approach1(Runs(np.ones(3), np.ones(3), np.ones(3)))
