"""Human evaluation: the statistics of judgements people made about model outputs, read from JSON-lines files —
the numbers a model comparison reports next to its automatic metrics, each with its uncertainty.

- preference (`{"a": "model_x", "b": "model_y", "winner": "a" | "b" | "tie"}` per line; Chatbot Arena's spelling
  `model_a`/`model_b` with winner `model_a`/`model_b`/`tie`/`tie (bothbad)` is read as the same): per-pair win
  rate (a tie is half a win) with its Wilson 95 % interval; Bradley–Terry strengths, fitted by Hunter's (2004) MM
  iteration with a tie as half a win for each side, reported as Elo-scale points 400·log10(p) with mean 0 (a gap
  of d points is a win probability 1/(1 + 10^(-d/400))); sequential Elo ratings (K = 32, start 1000) in the
  file's order and averaged over seeded random orders, since Elo depends on the order of the games.
- likert (`{"item": id, "rater": id, "score": int}` on a declared scale, e.g. 1-5): mean (with its normal 95 %
  interval), median, standard deviation, the count of every score; agreement between raters: Cohen's kappa
  (exactly two raters, unweighted and quadratic-weighted) and Krippendorff's alpha (interval and nominal; any
  number of raters, missing ratings).
- success (`{"task": id, "success": true | false}`): the success rate with its Wilson 95 % interval.

`llm-jax eval preference|likert|success --data FILE` prints a table (`--json`: the last line is one JSON object);
a bad line is one error naming the file and the line.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict

import numpy as np

from llm_jax import argtypes
from llm_jax.errors import UserError
from llm_jax.fileio import read_text

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
ELO_K, ELO_START, ELO_PERMUTATIONS = 32.0, 1000.0, 100
_WINNER = {"a": 1.0, "model_a": 1.0, "b": 0.0, "model_b": 0.0, "tie": 0.5, "tie (bothbad)": 0.5}


# ------------------------------------------------------------------------------------------------- reading files
def _rows(path: str, keys: tuple[str, ...], aliases: dict[str, str] | None = None) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line, or one UserError naming the file and the line."""
    rows = []  # read_text: one UserError for a missing file, a directory, a file that is not UTF-8
    for number, line in enumerate(read_text(path, "--data file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise UserError(f"{path}, line {number}: not JSON ({e.msg}): {line[:60]!r}") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {number}: a JSON {type(row).__name__}, expected an object with keys "
                            f"{', '.join(keys)}")
        for alias, key in (aliases or {}).items():
            if key not in row and alias in row:
                row[key] = row[alias]
        missing = [k for k in keys if k not in row]
        if missing:
            raise UserError(f"{path}, line {number}: no {missing[0]!r} key (each line needs {', '.join(keys)})")
        rows.append((number, row))
    if not rows:
        raise UserError(f"--data {path} has no rows: there is nothing to summarize")
    return rows


def _name(path: str, number: int, key: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise UserError(f"{path}, line {number}: {key}={value!r} is not a name (a non-empty string or an integer)")
    return str(value)


def read_preferences(path: str) -> list[tuple[str, str, float]]:
    """(model a, model b, a's score: 1 win, 0.5 tie, 0 loss) per line of a preference file."""
    games = []
    for number, row in _rows(path, ("a", "b", "winner"), {"model_a": "a", "model_b": "b"}):
        a, b = _name(path, number, "a", row["a"]), _name(path, number, "b", row["b"])
        if a == b:
            raise UserError(f"{path}, line {number}: model {a!r} is compared with itself")
        if not isinstance(row["winner"], str) or row["winner"] not in _WINNER:
            raise UserError(f"{path}, line {number}: winner={row['winner']!r}, expected 'a', 'b' or 'tie'")
        games.append((a, b, _WINNER[row["winner"]]))
    return games


def parse_scale(text: str) -> tuple[int, int]:
    """'1-5' -> (1, 5)."""
    try:
        low, high = (int(part) for part in text.split("-"))
    except ValueError:
        raise UserError(f"--scale {text!r} is not LOW-HIGH (two integers, e.g. 1-5)") from None
    if high <= low:
        raise UserError(f"--scale {text!r}: the highest score must be above the lowest")
    return low, high


def read_likert(path: str, scale: tuple[int, int]) -> list[tuple[str, str, int]]:
    """(item, rater, score) per line of a ratings file; a score off `scale` or a rater rating an item twice is an
    error naming the line."""
    seen, ratings = {}, []
    for number, row in _rows(path, ("item", "rater", "score")):
        item, rater = _name(path, number, "item", row["item"]), _name(path, number, "rater", row["rater"])
        score = row["score"]
        if isinstance(score, float) and score.is_integer():
            score = int(score)
        if isinstance(score, bool) or not isinstance(score, int):
            raise UserError(f"{path}, line {number}: score={score!r} is not an integer")
        if not scale[0] <= score <= scale[1]:
            raise UserError(f"{path}, line {number}: score {score} is off the scale {scale[0]}-{scale[1]}")
        if (item, rater) in seen:
            raise UserError(f"{path}, line {number}: rater {rater!r} already rated item {item!r} on line "
                            f"{seen[item, rater]}")
        seen[item, rater] = number
        ratings.append((item, rater, score))
    return ratings


def read_success(path: str) -> list[tuple[str, bool]]:
    out = []
    for number, row in _rows(path, ("task", "success")):
        if not isinstance(row["success"], bool):
            raise UserError(f"{path}, line {number}: success={row['success']!r}, expected true or false")
        out.append((_name(path, number, "task", row["task"]), row["success"]))
    return out


# -------------------------------------------------------------------------------------------------- statistics
def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion successes / n (successes may be fractional: a tie is half)."""
    if n == 0:
        return math.nan, math.nan
    p, z2 = successes / n, z * z
    centre, half = p + z2 / (2 * n), z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z2 / n)), min(1.0, (centre + half) / (1 + z2 / n))


def pairwise(games) -> list[dict]:
    """Per unordered pair (names sorted): games, wins, ties, a's win rate (ties half) and its Wilson interval."""
    table = defaultdict(lambda: [0, 0, 0])  # (a, b) -> [a wins, b wins, ties]
    for a, b, s in games:
        if a > b:
            a, b, s = b, a, 1.0 - s
        table[a, b][0 if s == 1 else 1 if s == 0 else 2] += 1
    rows = []
    for (a, b), (wa, wb, t) in sorted(table.items()):
        n = wa + wb + t
        low, high = wilson(wa + t / 2, n)
        rows.append({"a": a, "b": b, "n": n, "a_wins": wa, "b_wins": wb, "ties": t, "win_rate_a": (wa + t / 2) / n,
                     "ci_low": low, "ci_high": high})
    return rows


def _score_matrix(games) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Models, S_MM[i, j] = i's score against j (ties half) and N_MM[i, j] = games between i and j."""
    models = sorted({m for a, b, _ in games for m in (a, b)})
    idx = {m: i for i, m in enumerate(models)}
    S_MM = np.zeros((len(models),) * 2)
    for a, b, s in games:
        S_MM[idx[a], idx[b]] += s
        S_MM[idx[b], idx[a]] += 1 - s
    return models, S_MM, S_MM + S_MM.T  # every game adds s + (1 - s) = 1 to the pair's count


def bt_identifiable(games) -> bool:
    """Whether the Bradley–Terry maximum-likelihood strengths exist: every split of the models into two groups has
    a model of each group scoring (a win or a tie) against one of the other (the graph 'i scored against j' is
    strongly connected)."""
    _, S_MM, _ = _score_matrix(games)
    reach = np.eye(len(S_MM), dtype=bool) | (S_MM > 0)
    for _ in range(len(S_MM)):
        reach = reach | ((reach.astype(int) @ reach.astype(int)) > 0)
    return bool(reach.all())


def bradley_terry(games, prior: float = 0.0, tol: float = 1e-10, max_iter: int = 100_000) -> dict[str, float]:
    """Bradley–Terry strengths as Elo-scale points, 400·log10(p_i), mean 0. P(i beats j) = p_i / (p_i + p_j); the
    MM iteration p_i <- W_i / sum_j n_ij / (p_i + p_j) (W_i = wins + ties / 2) converges to the maximum-likelihood
    point. `prior` > 0 adds that many virtual ties to each pair that played (needed when one model never scores)."""
    models, S_MM, N_MM = _score_matrix(games)
    reached, frontier = {0}, [0]  # models joined to the first by games played: one scale needs one component
    while frontier:
        i = frontier.pop()
        for j in np.nonzero(N_MM[i])[0]:
            if int(j) not in reached:
                reached.add(int(j))
                frontier.append(int(j))
    if len(reached) < len(models):
        apart = sorted(models[j] for j in range(len(models)) if j not in reached)
        raise UserError(f"the Bradley–Terry strengths need every model linked by games: {', '.join(apart)} never "
                        f"played (directly or through others) against {models[0]}; their scales cannot be compared")
    if prior > 0:
        played = N_MM > 0
        S_MM, N_MM = S_MM + prior / 2 * played, N_MM + prior * played
    elif not bt_identifiable(games):
        raise UserError("the Bradley–Terry strengths have no maximum-likelihood value: some group of models never "
                        "scored against the rest (all its games lost); use prior > 0")
    W_M, log_p = S_MM.sum(1), np.zeros(len(models))
    for _ in range(max_iter):
        p = np.exp(log_p)
        new = np.log(W_M / (N_MM / (p[:, None] + p[None, :])).sum(1))
        new -= new.mean()
        done = np.max(np.abs(new - log_p)) < tol
        log_p = new
        if done:
            break
    return {m: float(400 * v / math.log(10)) for m, v in zip(models, log_p)}


def elo(games, k: float = ELO_K, start: float = ELO_START, permutations: int = 0, seed: int = 0) -> dict[str, float]:
    """Sequential Elo: R_a += K (S_a - E_a), E_a = 1 / (1 + 10^((R_b - R_a) / 400)), games in the file's order, or
    the mean over `permutations` seeded random orders."""
    models = sorted({m for a, b, _ in games for m in (a, b)})

    def play(order) -> np.ndarray:
        rating = dict.fromkeys(models, start)
        for g in order:
            a, b, s = games[g]
            delta = k * (s - 1 / (1 + 10 ** ((rating[b] - rating[a]) / 400)))
            rating[a], rating[b] = rating[a] + delta, rating[b] - delta
        return np.array([rating[m] for m in models])

    if permutations <= 0:
        total = play(range(len(games)))
    else:
        rng = np.random.default_rng(seed)
        total = np.mean([play(rng.permutation(len(games))) for _ in range(permutations)], axis=0)
    return {m: float(r) for m, r in zip(models, total)}


def score_stats(scores, scale: tuple[int, int]) -> dict:
    x, counts = np.asarray(scores, float), Counter(int(s) for s in scores)
    sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    half = Z95 * sd / math.sqrt(len(x))  # the mean's normal-approximation 95 % interval
    return {"n": len(x), "mean": float(x.mean()), "mean_ci": [float(x.mean() - half), float(x.mean() + half)],
            "median": float(np.median(x)), "stdev": sd,
            "distribution": {str(s): counts.get(s, 0) for s in range(scale[0], scale[1] + 1)}}


def cohen_kappa(x, y, categories, weights: str | None = None) -> float:
    """Cohen's kappa of two raters' labels `x`, `y` (same items, same order): 1 - sum(w O) / sum(w E) over the
    observed and chance (product of margins) proportion tables; w = [i != j], or ((i - j) / (k - 1))^2 with
    weights='quadratic' (categories in scale order). NaN when chance disagreement is 0."""
    pos = {c: i for i, c in enumerate(categories)}
    k = len(categories)
    O_KK = np.zeros((k, k))
    for a, b in zip(x, y):
        O_KK[pos[a], pos[b]] += 1
    O_KK /= max(1, len(x))
    E_KK = np.outer(O_KK.sum(1), O_KK.sum(0))
    i, j = np.indices((k, k))
    W_KK = ((i - j) / max(1, k - 1)) ** 2 if weights == "quadratic" else (i != j).astype(float)
    chance = float((W_KK * E_KK).sum())
    return 1 - float((W_KK * O_KK).sum()) / chance if chance > 0 else math.nan


def krippendorff_alpha(data_RU, level: str = "interval") -> float:
    """Krippendorff's alpha of a raters x units matrix (NaN = missing): 1 - (n - 1) sum o_ck d_ck / sum n_c n_k
    d_ck over the coincidence matrix o of the pairable values (units with 2+ ratings), d = [c != k] (nominal)
    or (c - k)^2 (interval). NaN when no unit has two ratings or all pairable values are equal."""
    data = np.asarray(data_RU, float)
    values = np.unique(data[~np.isnan(data)])
    o_VV = np.zeros((len(values), len(values)))
    for column in data.T:
        v = column[~np.isnan(column)]
        if len(v) >= 2:
            counts = np.bincount(np.searchsorted(values, v), minlength=len(values)).astype(float)
            o_VV += (np.outer(counts, counts) - np.diag(counts)) / (len(v) - 1)
    n_V = o_VV.sum(1)
    d_VV = ((values[:, None] - values[None, :]) ** 2 if level == "interval"
            else (values[:, None] != values[None, :]).astype(float))
    expected = float((np.outer(n_V, n_V) * d_VV).sum())
    return 1 - (n_V.sum() - 1) * float((o_VV * d_VV).sum()) / expected if expected > 0 else math.nan


# ------------------------------------------------------------------------------------------------- summaries
def summarize(kind: str, path: str, *, scale: tuple[int, int] = (1, 5), permutations: int = ELO_PERMUTATIONS) -> dict:
    """The metrics of one file: kind is 'preference', 'likert' or 'success'."""
    if kind == "preference":
        games = read_preferences(path)
        models = sorted({m for a, b, _ in games for m in (a, b)})
        prior = 0.0 if bt_identifiable(games) else 1.0
        return {"n": len(games), "models": models, "pairs": pairwise(games), "bt_prior": prior,
                "bradley_terry": bradley_terry(games, prior=prior), "elo": elo(games),
                "elo_permuted": elo(games, permutations=permutations), "elo_permutations": permutations}
    if kind == "likert":
        ratings = read_likert(path, scale)
        raters = sorted({r for _, r, _ in ratings})
        items = sorted({i for i, _, _ in ratings})
        by = {(i, r): s for i, r, s in ratings}
        data_RU = [[by.get((i, r), math.nan) for i in items] for r in raters]
        out = {**score_stats([s for *_, s in ratings], scale), "scale": list(scale), "items": len(items),
               "raters": len(raters), "alpha_interval": krippendorff_alpha(data_RU, "interval"),
               "alpha_nominal": krippendorff_alpha(data_RU, "nominal"),
               "per_rater": {r: score_stats([s for _, q, s in ratings if q == r], scale)["mean"] for r in raters}}
        if len(raters) == 2:
            both = [i for i in items if (i, raters[0]) in by and (i, raters[1]) in by]
            x, y = [by[i, raters[0]] for i in both], [by[i, raters[1]] for i in both]
            cats = range(scale[0], scale[1] + 1)  # no item rated by both: NaN
            out.update(kappa_items=len(both), kappa=cohen_kappa(x, y, cats),
                       kappa_quadratic=cohen_kappa(x, y, cats, "quadratic"))
        return out
    if kind == "success":
        rows = read_success(path)
        wins = sum(s for _, s in rows)
        low, high = wilson(wins, len(rows))
        return {"n": len(rows), "successes": wins, "tasks": len({t for t, _ in rows}), "rate": wins / len(rows),
                "ci_low": low, "ci_high": high}
    raise UserError(f"human evaluation kind {kind!r}: expected preference, likert or success")


def plot(kind: str, metrics: dict, path: str) -> None:
    """A PNG: the win-rate matrix as a heatmap (preference) or the score distribution with the mean (likert)."""
    if os.path.dirname(path) and not os.path.isdir(os.path.dirname(path)):
        raise UserError(f"--plot {path}: the directory {os.path.dirname(path)} does not exist")
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install llm_jax[plots]") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 5))
    if kind == "preference":
        models = metrics["models"]
        idx = {m: i for i, m in enumerate(models)}
        rate_MM = np.full((len(models),) * 2, np.nan)
        for row in metrics["pairs"]:
            rate_MM[idx[row["a"]], idx[row["b"]]], rate_MM[idx[row["b"]], idx[row["a"]]] = (row["win_rate_a"],
                                                                                           1 - row["win_rate_a"])
        image = ax.imshow(rate_MM, vmin=0, vmax=1, cmap="RdBu")
        for (i, j), v in np.ndenumerate(rate_MM):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if abs(v - 0.5) > 0.3 else "black")
        ax.set_xticks(range(len(models)), models, rotation=45, ha="right")
        ax.set_yticks(range(len(models)), models)
        ax.set_title("win rate of the row model against the column model (ties half)")
        fig.colorbar(image)
    elif kind == "likert":
        scores = [int(s) for s in metrics["distribution"]]
        ax.bar(scores, list(metrics["distribution"].values()), color="tab:blue")
        (low, high), mean = metrics["mean_ci"], metrics["mean"]
        if not math.isnan(low):
            ax.axvspan(low, high, color="gray", alpha=0.3, label=f"95% CI of the mean [{low:.2f}, {high:.2f}]")
        ax.axvline(mean, color="black", linestyle="--", label=f"mean {mean:.2f}")
        ax.set_xticks(scores)
        ax.set(xlabel="score", ylabel="ratings", title=f"{metrics['n']} ratings")
        ax.legend()
    else:
        raise UserError(f"no plot for {kind!r}: plots are drawn for preference and likert")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_table(kind: str, m: dict, path: str) -> None:
    def f(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
    if kind == "preference":
        print(f"preference: {m['n']} comparisons of {len(m['models'])} models ({path})")
        print(f"{'a':>16} {'b':>16} {'n':>5} {'a wins':>6} {'b wins':>6} {'ties':>5}  win rate a  95% CI")
        for r in m["pairs"]:
            print(f"{r['a']:>16} {r['b']:>16} {r['n']:>5} {r['a_wins']:>6} {r['b_wins']:>6} {r['ties']:>5}  "
                  f"{r['win_rate_a']:>10.3f}  [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
        prior = f", {m['bt_prior']:g} virtual tie per pair" if m["bt_prior"] else ""
        print(f"\nBradley-Terry in Elo-scale points, mean 0{prior}; Elo in file order and its mean over "
              f"{m['elo_permutations']} random orders")
        print(f"{'model':>16} {'Bradley-Terry':>13} {'Elo':>8} {'Elo (mean)':>10}")
        for model in sorted(m["models"], key=lambda x: -m["bradley_terry"][x]):
            print(f"{model:>16} {m['bradley_terry'][model]:>13.1f} {m['elo'][model]:>8.1f} "
                  f"{m['elo_permuted'][model]:>10.1f}")
    elif kind == "likert":
        print(f"likert: {m['n']} ratings of {m['items']} items by {m['raters']} raters, scale {m['scale'][0]}-"
              f"{m['scale'][1]} ({path})")
        print(f"mean {f(m['mean'])} (95% CI {f(m['mean_ci'][0])}-{f(m['mean_ci'][1])})  median {m['median']:g}  "
              f"stdev {f(m['stdev'])}")
        print("score   " + " ".join(f"{s:>5}" for s in m["distribution"]))
        print("count   " + " ".join(f"{c:>5}" for c in m["distribution"].values()))
        print(f"Krippendorff's alpha: interval {f(m['alpha_interval'])}, nominal {f(m['alpha_nominal'])}")
        if "kappa" in m:
            print(f"Cohen's kappa ({m['kappa_items']} items both rated): {f(m['kappa'])}, quadratic-weighted "
                  f"{f(m['kappa_quadratic'])}")
        for rater, mean in m["per_rater"].items():
            print(f"  rater {rater}: mean {mean:.3f}")
    else:
        print(f"success: {m['successes']}/{m['n']} = {m['rate']:.3f}, 95% CI [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
              f" over {m['tasks']} tasks ({path})")


def json_safe(obj):
    """NaN -> None, recursively, so that --json prints standard JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _command(kind: str):
    def run(args, extra) -> int:
        options = {"scale": parse_scale(args.scale)} if kind == "likert" else {}
        if kind == "preference":
            options["permutations"] = args.permutations
        metrics = summarize(kind, args.data, **options)
        _print_table(kind, metrics, args.data)
        if getattr(args, "plot", None):
            plot(kind, metrics, args.plot)
            print(f"plot: {args.plot}")
        if args.json:
            print(json.dumps(json_safe(metrics)))
        return 0
    return run


def add_parser(eval_sub) -> None:
    """`eval preference`, `eval likert` and `eval success` on the `eval` subcommand's subparsers."""
    helps = {"preference": "pairwise preferences: win rates, Bradley-Terry strengths, Elo ratings",
             "likert": "ratings on a scale: mean, distribution, Cohen's kappa, Krippendorff's alpha",
             "success": "task success rate with its Wilson interval"}
    for kind, text in helps.items():
        p = eval_sub.add_parser(kind, help=text)
        p.add_argument("--data", required=True, help="a JSON-lines file (see docs/evaluation.md)")
        if kind == "likert":
            p.add_argument("--scale", default="1-5", help="LOW-HIGH: the scores allowed (default 1-5)")
        if kind == "preference":
            p.add_argument("--permutations", type=argtypes.nonneg_int, default=ELO_PERMUTATIONS,
                           help="random game orders the mean Elo is taken over")
        if kind != "success":
            p.add_argument("--plot", help="write a PNG here")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=_command(kind), overrides=False, parser=p)
