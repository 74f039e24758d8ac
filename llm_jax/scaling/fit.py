"""Chinchilla approach 3: the parametric loss L(N, D) = E + A/N^alpha + B/D^beta, and what follows from it.

The fit follows Hoffmann et al. (2022) as re-done by Besiroglu et al. (2024): minimise the Huber loss
(delta = 1e-3) between log L and log of the prediction, written as a log-sum-exp over
(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b, E = e^e, by L-BFGS from every point of a grid of
starts, keeping the best. Intervals come from a bootstrap over the points (each resample refitted from the
full-data optimum). Compute-optimal allocation under C = 6ND follows in closed form.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy import optimize

from llm_jax.scaling.runs import Runs

NAMES = ("E", "A", "B", "alpha", "beta")

# Reported values, printed beside a fit of the shared Chinchilla data.
HOFFMANN_2022 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
BESIROGLU_2024 = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}

# Besiroglu et al.'s grid of initialisations for (a, b, e, alpha, beta).
FULL_GRID = (np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5),
             np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))
# A thinner grid that finds the same optimum on the Chinchilla points in a fraction of the time.
COARSE_GRID = (np.array([0.0, 5, 10, 20]), np.array([0.0, 5, 10, 20]), np.array([-1.0, 0, 1]),
               np.array([0.0, 0.5, 1]), np.array([0.0, 0.5, 1]))


@dataclasses.dataclass(frozen=True)
class ParametricFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_points: int

    def values(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in NAMES}

    def predict(self, params, tokens):
        return self.E + self.A / np.power(params, self.alpha) + self.B / np.power(tokens, self.beta)


def _huber_objective(theta, log_n, log_d, log_loss, delta):
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    top = terms.max(axis=0)
    exp = np.exp(terms - top)
    total = exp.sum(axis=0)
    r = top + np.log(total) - log_loss           # log-sum-exp prediction minus log L
    small = np.abs(r) <= delta
    value = np.sum(np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)))
    dr = np.where(small, r, delta * np.sign(r)) * (exp / total)   # d value / d term, per point (softmax)
    grad = np.array([dr[0].sum(), dr[1].sum(), dr[2].sum(), -(dr[0] * log_n).sum(), -(dr[1] * log_d).sum()])
    return value, grad


def _minimise(theta0, data, delta, *, precise=True):
    # Screening a start needs far fewer iterations than converging the winner to scipy's tightest tolerance.
    options = {"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-12} if precise else {"maxiter": 60, "ftol": 1e-9}
    result = optimize.minimize(_huber_objective, theta0, args=(*data, delta), jac=True, method="L-BFGS-B",
                               options=options)
    return result.x, float(result.fun)


def _to_fit(theta, objective, n_points) -> ParametricFit:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return ParametricFit(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha, beta=beta,
                         objective=objective, n_points=n_points)


def _log_data(runs: Runs):
    return np.log(runs.params), np.log(runs.tokens), np.log(runs.loss)


def fit_parametric(runs: Runs, *, delta: float = 1e-3, grid=FULL_GRID, polish: int = 20) -> ParametricFit:
    """Best of L-BFGS runs from every start of `grid` (a, b, e, alpha, beta).

    Every start is screened with a short run; the `polish` best screened points are then run to convergence.
    """
    if len(runs) < 5:
        raise ValueError(f"approach 3 fits 5 parameters and needs at least 5 points, got {len(runs)}")
    data = _log_data(runs)
    screened = []
    for start in itertools.product(*grid):
        theta, value = _minimise(np.array(start, dtype=float), data, delta, precise=False)
        if np.isfinite(value):
            screened.append((value, theta))
    screened.sort(key=lambda item: item[0])
    best_theta, best_value = None, np.inf
    for _, theta in screened[:polish]:
        theta, value = _minimise(theta, data, delta)
        if value < best_value:
            best_theta, best_value = theta, value
    return _to_fit(best_theta, best_value, len(runs))


def bootstrap_parametric(runs: Runs, fit: ParametricFit, *, samples: int = 200, delta: float = 1e-3,
                         seed: int = 0, level: float = 0.95) -> dict[str, dict[str, float]]:
    """Percentile intervals of each parameter over `samples` resamples of the points (with replacement)."""
    rng = np.random.default_rng(seed)
    start = np.array([np.log(fit.A), np.log(fit.B), np.log(fit.E), fit.alpha, fit.beta])
    log_n, log_d, log_l = _log_data(runs)
    draws = []
    for _ in range(samples):
        idx = rng.integers(0, len(runs), len(runs))
        theta, value = _minimise(start, (log_n[idx], log_d[idx], log_l[idx]), delta)
        if np.isfinite(value):
            draws.append(_to_fit(theta, value, len(idx)).values())
    tail = (1 - level) / 2 * 100
    out = {}
    for name in NAMES:
        column = np.array([d[name] for d in draws])
        lo, hi = np.percentile(column, [tail, 100 - tail])
        out[name] = {"low": float(lo), "high": float(hi), "std": float(column.std(ddof=1))}
    return out


def compute_optimal(fit: ParametricFit, flops) -> dict[str, np.ndarray | float]:
    """N*(C), D*(C) minimising L(N, D) subject to 6ND = C (Hoffmann et al., appendix D.2)."""
    flops = np.asarray(flops, dtype=float)
    a = fit.beta / (fit.alpha + fit.beta)
    b = fit.alpha / (fit.alpha + fit.beta)
    g = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1.0 / (fit.alpha + fit.beta))
    params = g * (flops / 6.0) ** a
    tokens = (flops / 6.0) ** b / g
    return {"a": a, "b": b, "params": params, "tokens": tokens, "tokens_per_param": tokens / params}


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * x^exponent, fitted by least squares in log-log space, with the exponent's std error."""
    coefficient: float
    exponent: float
    exponent_stderr: float
    n_points: int

    def __call__(self, x):
        return self.coefficient * np.power(x, self.exponent)


def fit_power_law(x, y) -> PowerLaw:
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if len(lx) < 2 or np.ptp(lx) == 0:
        raise ValueError("a power law needs at least two distinct x values")
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    dof = len(lx) - 2
    stderr = float(np.sqrt(resid @ resid / dof / np.sum((lx - lx.mean()) ** 2))) if dof > 0 else float("nan")
    return PowerLaw(float(np.exp(intercept)), float(slope), stderr, len(lx))


def kaplan_laws(runs: Runs) -> dict[str, dict[str, float]]:
    """Kaplan et al. (2020): L(N) = (N_c/N)^alpha_N over the best loss per model size, and L(D) = (D_c/D)^alpha_D
    over the best loss per data size (each best point approximates the other resource being unconstrained)."""
    out = {}
    for name, x in (("L(N)", runs.params), ("L(D)", runs.tokens)):
        rounded = np.round(np.log10(x), 3)        # one group per distinct size (to 0.1%)
        keys = np.unique(rounded)
        if len(keys) < 2:
            continue
        law = fit_power_law([x[rounded == k][0] for k in keys], [runs.loss[rounded == k].min() for k in keys])
        alpha = -law.exponent
        scale = law.coefficient ** (1.0 / alpha) if alpha > 0 else float("nan")
        out[name] = {"alpha": alpha, "alpha_stderr": law.exponent_stderr, "critical_scale": scale,
                     "n_points": law.n_points}
    return out
