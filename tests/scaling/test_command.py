import json

import pytest

from helpers import CHINCHILLA_CSV as CHINCHILLA, run_cli


def test_scaling_fit_command_prints_fit_intervals_and_both_references(tmp_path):
    plot = tmp_path / "fit.png"
    proc = run_cli("scaling", "fit", "--csv", CHINCHILLA, "--exclude-highest-loss", "5", "--starts", "coarse",
                   "--bootstrap", "20", "--plot", str(plot), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n_points"] == 240 and out["excluded_highest_loss"] == 5
    assert out["E"] == pytest.approx(1.82, rel=0.02)
    assert out["intervals"]["alpha"]["low"] < out["alpha"] < out["intervals"]["alpha"]["high"]
    assert out["approach3"]["reference"]["hoffmann_2022"]["beta"] == 0.28
    assert plot.stat().st_size > 10_000
    human = run_cli("scaling", "fit", "--csv", CHINCHILLA, "--exclude-highest-loss", "5", "--starts", "coarse",
                    "--bootstrap", "0")
    assert "Besiroglu 2024" in human.stdout and "Hoffmann 2022" in human.stdout


def test_scaling_fit_rejects_a_bad_file_with_one_line(tmp_path):
    proc = run_cli("scaling", "fit", "--csv", str(tmp_path / "missing.csv"))
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_isoflop_table_gets_approach_2_allocation(tmp_path):
    import numpy as np
    from llm_jax.scaling import fit
    truth = fit.ParametricFit(E=1.7, A=400.0, B=900.0, alpha=0.33, beta=0.30, objective=0, n_points=0)
    rows = ["params,tokens,loss,budget"]
    for c in (1e18, 1e19, 1e20):
        n_star = fit.compute_optimal(truth, [c])["params"][0]
        for n in n_star * np.geomspace(0.25, 4, 5):
            rows.append(f"{n},{c / (6 * n)},{truth.predict(n, c / (6 * n))},{c}")
    path = tmp_path / "iso.csv"
    path.write_text("\n".join(rows) + "\n")
    proc = run_cli("scaling", "fit", "--csv", str(path), "--starts", "coarse", "--bootstrap", "0",
                   "--budgets", "1e21", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = fit.compute_optimal(truth, [1e21])
    a2 = out["approach2"]
    assert a2["a"] == pytest.approx(expected["a"], abs=0.01)
    assert a2["allocation"][0]["params"] == pytest.approx(expected["params"][0], rel=0.1)
    assert out["approach3"]["allocation"]["budgets"][0]["params"] == pytest.approx(expected["params"][0], rel=0.01)
