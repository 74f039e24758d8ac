"""Human-evaluation statistics against numbers computed by hand or published: Wilson intervals, Bradley–Terry on
tournaments whose maximum-likelihood point is known, Elo over two games, Cohen's kappa on Wikipedia's table and a
3x3 table, Krippendorff's (2011) worked example; the files' errors name the line; the commands print JSON."""

import argparse
import json
import math

import pytest

from llm_jax.errors import UserError
from llm_jax.eval import human

NAN = math.nan


def write_jsonl(tmp_path, rows, name="data.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def run(argv) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    human.add_parser(parser.add_subparsers(dest="metric"))
    args = parser.parse_args(argv)
    return args.func(args, [])


def test_wilson_by_hand():
    # 8 successes of 10, z = 1.959964, z^2 = 3.841459: centre = (0.8 + z^2/20) / (1 + z^2/10) = 0.992073 / 1.384146
    # = 0.716740; half = z * sqrt(0.8*0.2/10 + z^2/400) / 1.384146 = 1.959964 * 0.160012 / 1.384146 = 0.226579
    low, high = human.wilson(8, 10)
    assert low == pytest.approx(0.716740 - 0.226579, abs=2e-6) and high == pytest.approx(0.716740 + 0.226579, abs=2e-6)
    # 0 of 5: centre = half = (z^2/10) / (1 + z^2/5) = 0.384146 / 1.768292 = 0.217241 -> [0, 0.434482]
    assert human.wilson(0, 5) == pytest.approx((0.0, 0.434482), abs=2e-6)


def test_pairwise_win_rate_counts_ties_half(tmp_path):
    rows = ([{"a": "x", "b": "y", "winner": "a"}] * 6 + [{"a": "y", "b": "x", "winner": "b"}]  # x wins 7
            + [{"a": "x", "b": "y", "winner": "tie"}] * 2 + [{"model_a": "x", "model_b": "y", "winner": "model_b"}])
    path = write_jsonl(tmp_path, rows)
    (pair,) = human.summarize("preference", path)["pairs"]
    # x: 7 wins + 2 ties / 2 = 8 of 10 -> 0.8, the interval of 8/10 above
    assert (pair["a"], pair["b"], pair["n"], pair["a_wins"], pair["b_wins"], pair["ties"]) == ("x", "y", 10, 7, 1, 2)
    assert pair["win_rate_a"] == 0.8 and pair["ci_low"] == pytest.approx(0.490161, abs=2e-6)


def test_bradley_terry_transitive_tournament():
    # A-B 2:1, B-C 2:1, A-C 4:1. p = (4, 2, 1) matches every pair's win fraction exactly (2/3, 2/3, 4/5), so it
    # maximises each pair's term of the likelihood and hence the whole: log p - mean = (1, 0, -1) * ln 2, i.e.
    # 400 log10 2 = 120.412 Elo-scale points.
    games = ([("A", "B", 1.0)] * 2 + [("A", "B", 0.0)] + [("B", "C", 1.0)] * 2 + [("C", "B", 1.0)]
             + [("A", "C", 1.0)] * 4 + [("C", "A", 1.0)])
    s = human.bradley_terry(games)
    assert s == pytest.approx({"A": 120.412, "B": 0.0, "C": -120.412}, abs=1e-3)


def test_bradley_terry_with_ties_satisfies_the_fixed_point():
    # ties are half a win each: wins_i = sum_j n_ij p_i / (p_i + p_j) must hold at the fitted strengths
    games = [("A", "B", 1.0), ("A", "B", 0.5), ("B", "A", 1.0), ("B", "C", 1.0), ("C", "B", 0.5), ("C", "A", 1.0),
             ("A", "C", 0.5), ("A", "C", 1.0)]
    s = human.bradley_terry(games)
    p = {m: 10 ** (v / 400) for m, v in s.items()}
    assert sum(s.values()) == pytest.approx(0.0, abs=1e-9)
    wins = {"A": 1 + .5 + 0 + .5 + 1, "B": 0 + .5 + 1 + 1 + .5, "C": 0 + .5 + 1 + .5 + 0}
    for i in p:
        expected = sum(p[i] / (p[i] + p[j]) for a, b, _ in games for (x, j) in ((a, b), (b, a)) if x == i)
        assert expected == pytest.approx(wins[i], abs=1e-8)


def test_bradley_terry_needs_a_prior_when_one_model_never_scores(tmp_path):
    games = [("A", "B", 1.0), ("A", "B", 1.0), ("B", "C", 0.5)]
    assert not human.bt_identifiable(games)
    with pytest.raises(UserError, match="maximum-likelihood"):
        human.bradley_terry(games)
    path = write_jsonl(tmp_path, [{"a": a, "b": b, "winner": "a" if s == 1 else "tie"} for a, b, s in games])
    m = human.summarize("preference", path)
    assert m["bt_prior"] == 1.0 and m["bradley_terry"]["A"] > m["bradley_terry"]["B"]


def test_elo_two_games_by_hand():
    # game 1: A beats B, both 1000, E = 0.5: A 1016, B 984. game 2: B ties C: 10^(16/400) = 1.096478, E_B =
    # 1 / 2.096478 = 0.476990, B += 32 (0.5 - 0.476990) = 0.736307 -> 984.736307, C = 999.263693
    r = human.elo([("A", "B", 1.0), ("B", "C", 0.5)])
    assert r == pytest.approx({"A": 1016.0, "B": 984.736307, "C": 999.263693}, abs=2e-5)


def test_elo_permutations_average_over_orders():
    # A beats B then B beats A: A 1016, then E_B = 1/(1 + 10^(32/400)) = 0.454078 -> B 984 + 17.4695 = 1001.47,
    # A 998.53. The reverse order gives A 1001.47. Averaged over random orders A lands between the two.
    games = [("A", "B", 1.0), ("B", "A", 1.0)]
    assert human.elo(games)["A"] == pytest.approx(998.5305, abs=1e-3)
    mean = human.elo(games, permutations=200)
    assert abs(mean["A"] - 1000) < 1.4 and mean["A"] + mean["B"] == pytest.approx(2000)


def test_cohen_kappa_wikipedia_and_a_3x3_table():
    # Wikipedia: 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5, 0.4
    x = ["y"] * 25 + ["n"] * 25
    y = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert human.cohen_kappa(x, y, ["y", "n"]) == pytest.approx(0.4)
    # 3x3 (rows rater 1, cols rater 2): [[3,1,0],[0,2,1],[1,0,2]], margins (4,3,3) both: p_o = 0.7, p_e = 0.34,
    # kappa = 0.36 / 0.66 = 6/11. Quadratic weights 0.25 at distance 1, 1 at 2: observed 1.5/10 = 0.15, chance
    # (12*.25 + 12 + 12*.25 + 9*.25 + 12 + 9*.25) / 100 = 0.345: 1 - 0.15/0.345 = 13/23
    pairs = [(1, 1)] * 3 + [(2, 2)] * 2 + [(3, 3)] * 2 + [(1, 2), (2, 3), (3, 1)]
    a, b = zip(*pairs)
    assert human.cohen_kappa(a, b, [1, 2, 3]) == pytest.approx(6 / 11)
    assert human.cohen_kappa(a, b, [1, 2, 3], "quadratic") == pytest.approx(13 / 23)


KRIPPENDORFF_2011 = [  # 4 observers x 12 units, "Computing Krippendorff's alpha-reliability" (2011), p. 5-6
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN]]


def test_krippendorff_alpha_published_example():
    assert human.krippendorff_alpha(KRIPPENDORFF_2011, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert human.krippendorff_alpha(KRIPPENDORFF_2011, "interval") == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_alpha_small_table_by_hand():
    # 2 raters, units (1,1), (1,2), (2,2): pairable values 1,1,1,2,2,2 (n = 6); coincidences o_11 = 2, o_12 = o_21
    # = 1, o_22 = 2; nominal: 1 - (n-1) * 2 / (n_1 n_2 * 2) = 1 - 5*2 / 18 = 4/9 (interval: the same, d = 1)
    data = [[1, 1, 2], [1, 2, 2]]
    assert human.krippendorff_alpha(data, "nominal") == pytest.approx(4 / 9)
    assert human.krippendorff_alpha(data, "interval") == pytest.approx(4 / 9)


def test_likert_summary_and_json(tmp_path, capsys):
    rows = [{"item": i, "rater": r, "score": s} for i, r, s in
            [(1, "ann", 1), (1, "bob", 1), (2, "ann", 1), (2, "bob", 2), (3, "ann", 2), (3, "bob", 2), (4, "ann", 5)]]
    path = write_jsonl(tmp_path, rows)
    assert run(["likert", "--data", path, "--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # scores 1,1,1,2,2,2,5: mean 2, median 2, sample variance (1+1+1+0+0+0+9)/6 = 2
    assert (m["n"], m["mean"], m["median"], m["stdev"]) == (7, 2.0, 2.0, pytest.approx(math.sqrt(2)))
    assert m["distribution"] == {"1": 3, "2": 3, "3": 0, "4": 0, "5": 1}
    # item 4 has one rating: unpairable; the rest is the 4/9 table above; kappa: p_o 2/3, p_e = 4/9 -> 0.4
    assert m["alpha_nominal"] == pytest.approx(4 / 9) and m["kappa_items"] == 3
    assert m["kappa"] == pytest.approx(0.4)


@pytest.mark.parametrize("line, message", [
    ("not json", "line 2: not JSON"),
    ('{"item": 1, "rater": "x"}', "line 2: no 'score' key"),
    ('{"item": 1, "rater": "x", "score": 6}', "line 2: score 6 is off the scale 1-5"),
    ('{"item": 1, "rater": "x", "score": 2.5}', "line 2: score=2.5 is not an integer"),
    ('{"item": 1, "rater": "a", "score": 3}', "line 2: rater 'a' already rated item '1' on line 1"),
])
def test_likert_bad_lines_name_the_line(tmp_path, line, message):
    path = write_jsonl(tmp_path, ['{"item": 1, "rater": "a", "score": 3}', line])
    with pytest.raises(UserError, match=message) as e:
        human.summarize("likert", path)
    assert path in str(e.value)


@pytest.mark.parametrize("line, message", [
    ('{"a": "x", "b": "y", "winner": "c"}', "line 1: winner='c', expected 'a', 'b' or 'tie'"),
    ('{"a": "x", "winner": "a"}', "line 1: no 'b' key"),
    ('{"a": "x", "b": "x", "winner": "a"}', "line 1: model 'x' is compared with itself"),
    ('[1, 2]', "line 1: a JSON list"),
])
def test_preference_bad_lines_name_the_line(tmp_path, line, message):
    with pytest.raises(UserError, match=message):
        human.summarize("preference", write_jsonl(tmp_path, [line]))


def test_empty_file_and_bad_scale(tmp_path):
    with pytest.raises(UserError, match="has no rows"):
        human.summarize("success", write_jsonl(tmp_path, ["", "  "]))
    with pytest.raises(UserError, match="LOW-HIGH"):
        human.parse_scale("five")
    with pytest.raises(UserError, match="No such file"):
        human.summarize("likert", str(tmp_path / "missing.jsonl"))


def test_success_rate_command(tmp_path, capsys):
    rows = [{"task": t, "success": s} for t, s in [(1, True)] * 8 + [(2, False)] * 2]
    assert run(["success", "--data", write_jsonl(tmp_path, rows), "--json"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (m["rate"], m["n"], m["tasks"]) == (0.8, 10, 2) and m["ci_high"] == pytest.approx(0.943318, abs=2e-6)
    with pytest.raises(UserError, match="line 1: success='yes'"):
        human.summarize("success", write_jsonl(tmp_path, [{"task": 1, "success": "yes"}], "bad.jsonl"))


def test_preference_command_table_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rows = [{"a": "x", "b": "y", "winner": w} for w in "aab"] + [{"a": "y", "b": "z", "winner": "tie"}]
    png = tmp_path / "wins.png"
    assert run(["preference", "--data", write_jsonl(tmp_path, rows), "--plot", str(png), "--json"]) == 0
    out = capsys.readouterr().out
    m = json.loads(out.strip().splitlines()[-1])
    assert [p["win_rate_a"] for p in m["pairs"]] == pytest.approx([2 / 3, 0.5])
    assert m["elo"]["x"] + m["elo"]["y"] + m["elo"]["z"] == pytest.approx(3000) and "Bradley-Terry" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bradley_terry_refuses_models_that_never_met():
    from llm_jax.eval.human import bradley_terry
    games = [("a", "b", 1.0), ("a", "b", 0.0), ("c", "d", 1.0), ("c", "d", 0.5)]  # {a, b} and {c, d} never meet
    with pytest.raises(UserError, match="c, d never played"):
        bradley_terry(games, prior=1.0)
