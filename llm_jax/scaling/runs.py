"""Reading a table of training runs for the scaling fits: one row per (model size, data, loss) point.

Accepted column names (case-insensitive): size as `params`, `N` or `Model Size`; data as `tokens`, `D` or
`Training Tokens`; compute as `flops`, `C` or `Training FLOP`; `loss`. Two of size/data/compute are
enough: the third follows from C = 6·N·D. Optional: `run` (a training curve's id, for approach 1) and
`budget` (the IsoFLOP budget a run belongs to, for approach 2).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os

import numpy as np

from llm_jax.errors import StorageError, UserError
from llm_jax.fileio import read_text

_ALIASES = {
    "params": ("params", "n", "model size", "model_size", "parameters"),
    "tokens": ("tokens", "d", "training tokens", "training_tokens", "data"),
    "flops": ("flops", "c", "training flop", "training flops", "training_flop", "compute"),
    "loss": ("loss", "final_loss", "eval_loss"),
    "run": ("run", "run_id", "member"),
    "budget": ("budget", "flop_budget", "isoflop_budget"),
}


class RunsError(UserError):
    """A runs table that cannot be fitted; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Runs:
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    run: np.ndarray | None = None
    budget: np.ndarray | None = None

    @property
    def flops(self) -> np.ndarray:
        return 6.0 * self.params * self.tokens

    def __len__(self) -> int:
        return len(self.loss)

    def select(self, keep: np.ndarray) -> "Runs":
        pick = lambda a: None if a is None else a[keep]
        return Runs(self.params[keep], self.tokens[keep], self.loss[keep], pick(self.run), pick(self.budget))

    def exclude_highest_loss(self, k: int) -> "Runs":
        """Drop the k points with the highest loss (Besiroglu et al. drop 5 outliers before fitting)."""
        if k <= 0:
            return self
        if k >= len(self):
            raise RunsError(f"--exclude-highest-loss {k} would leave no points of {len(self)}")
        keep = np.sort(np.argsort(self.loss)[:-k])
        return self.select(keep)


def _column(header: list[str], role: str) -> str | None:
    lowered = {h.strip().lower(): h for h in header}
    for alias in _ALIASES[role]:
        if alias in lowered:
            return lowered[alias]
    return None


def _floats(rows, column, path) -> np.ndarray:
    values = []
    for number, r in enumerate(rows, 1):
        if r[column] is None:
            raise RunsError(f"{path}: data row {number} is shorter than the header (it has no {column!r} value)")
        try:
            values.append(float(r[column]))
        except ValueError as e:
            raise RunsError(f"{path}: data row {number}, column {column!r} holds a value that is not a number "
                            f"({e})") from None
    return np.array(values)


def load_runs(path: str) -> Runs:
    if os.path.isdir(path):
        raise RunsError(f"{path}: is a directory, not a CSV file")
    if not os.path.exists(path):
        raise RunsError(f"{path}: no such file")
    try:
        text = read_text(path, "runs table")
    except StorageError:
        raise
    except UserError as e:  # unreadable, or not UTF-8
        raise RunsError(str(e)) from e
    if "\0" in text:
        raise RunsError(f"{path}: holds NUL bytes; it is not a CSV text file")
    try:
        reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))  # Excel writes a BOM
        header = reader.fieldnames or []
        rows = list(reader)
    except csv.Error as e:
        raise RunsError(f"{path}: not a readable CSV table ({e})") from None
    if not rows:
        raise RunsError(f"{path}: no rows")
    cols = {role: _column(header, role) for role in _ALIASES}
    if cols["loss"] is None:
        raise RunsError(f"{path}: no loss column (looked for {', '.join(_ALIASES['loss'])}); columns: {header}")
    have = [r for r in ("params", "tokens", "flops") if cols[r] is not None]
    if len(have) < 2 or cols["params"] is None and cols["tokens"] is None:
        raise RunsError(f"{path}: need two of params/tokens/flops (model size, training tokens, training FLOP); "
                        f"columns: {header}")
    get = {r: _floats(rows, cols[r], path) for r in have}
    params = get["params"] if "params" in get else get["flops"] / (6.0 * get["tokens"])
    tokens = get["tokens"] if "tokens" in get else get["flops"] / (6.0 * params)
    loss = _floats(rows, cols["loss"], path)
    for name, values in (("params", params), ("tokens", tokens), ("loss", loss)):
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise RunsError(f"{path}: {name} must be finite and positive in every row")
    run = np.array([r[cols["run"]] for r in rows]) if cols["run"] else None
    budget = _floats(rows, cols["budget"], path) if cols["budget"] else None
    return Runs(params, tokens, loss, run, budget)
