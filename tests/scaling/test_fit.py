import numpy as np
import pytest

from helpers import CHINCHILLA_CSV as CHINCHILLA
from llm_jax.scaling import fit
from llm_jax.scaling.runs import Runs, load_runs


def synthetic_runs(truth, sizes, budgets, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    n = np.array([s for _ in budgets for s in sizes], float)
    c = np.array([b for b in budgets for _ in sizes], float)
    d = c / (6 * n)
    loss = truth.predict(n, d) * np.exp(noise * rng.standard_normal(len(n)))
    return Runs(n, d, loss, budget=c)


TRUTH = fit.ParametricFit(E=1.7, A=400.0, B=900.0, alpha=0.33, beta=0.30, objective=0, n_points=0)


def test_parametric_fit_recovers_known_parameters_from_noiseless_points():
    runs = synthetic_runs(TRUTH, np.geomspace(1e7, 1e10, 8), np.geomspace(1e18, 1e22, 6))
    got = fit.fit_parametric(runs, grid=fit.COARSE_GRID)
    for name in fit.NAMES:
        assert getattr(got, name) == pytest.approx(getattr(TRUTH, name), rel=2e-3), name


def test_compute_optimal_allocation_minimises_loss_on_the_budget():
    c = 1e21
    opt = fit.compute_optimal(TRUTH, [c])
    n_star = opt["params"][0]
    assert 6 * n_star * opt["tokens"][0] == pytest.approx(c)
    sizes = n_star * np.geomspace(0.5, 2, 41)
    losses = TRUTH.predict(sizes, c / (6 * sizes))
    assert np.argmin(losses) == 20     # the middle of the grid, i.e. n_star itself
    assert opt["a"] + opt["b"] == pytest.approx(1.0)


def test_power_law_and_kaplan_exponents():
    x = np.geomspace(1e6, 1e9, 10)
    law = fit.fit_power_law(x, 3.0 * x**-0.076)
    assert law.exponent == pytest.approx(-0.076) and law.coefficient == pytest.approx(3.0)
    runs = Runs(x, np.full(10, 1e12), (8.8e13 / x) ** 0.076)
    k = fit.kaplan_laws(runs)["L(N)"]
    assert k["alpha"] == pytest.approx(0.076) and k["critical_scale"] == pytest.approx(8.8e13, rel=1e-6)


def test_reproduces_besiroglu_et_al_on_the_chinchilla_points():
    """Approach 3 on the 245 extracted Figure 4 points, the 5 highest-loss excluded, as in Besiroglu et al."""
    runs = load_runs(CHINCHILLA).exclude_highest_loss(5)
    got = fit.fit_parametric(runs, grid=fit.COARSE_GRID)
    ref = fit.BESIROGLU_2024
    for name in ("E", "alpha", "beta"):
        assert getattr(got, name) == pytest.approx(ref[name], rel=0.02), name
    for name in ("A", "B"):
        assert getattr(got, name) == pytest.approx(ref[name], rel=0.15), name
