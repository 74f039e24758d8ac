import numpy as np

from llm_jax.scaling import fit, isoflop
from llm_jax.scaling.plots import plot_fit
from llm_jax.scaling.runs import Runs


def test_plot_fit_writes_a_png_with_and_without_a_parametric_fit(tmp_path):
    truth = fit.ParametricFit(E=1.7, A=400.0, B=900.0, alpha=0.33, beta=0.30, objective=0, n_points=0)
    n = np.array([1e7, 3e7, 1e8, 3e8] * 2)
    c = np.array([1e18] * 4 + [1e19] * 4)
    runs = Runs(n, c / (6 * n), truth.predict(n, c / (6 * n)), budget=c)
    for name, parametric in (("with.png", truth), ("without.png", None)):
        path = plot_fit(runs, parametric, str(tmp_path / name), approach2=isoflop.approach2(runs))
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and (tmp_path / name).stat().st_size > 10_000
