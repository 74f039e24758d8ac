"""Where a run reports: the console progress line, `metrics.jsonl` and TensorBoard event files."""

from __future__ import annotations

import json
import math
import os

from llm_jax.fileio import FileFormatError, read_text


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(step: int, total: int, m: dict, eta_s: float) -> str:
    parts = [f"step {step:>{len(str(total))}}/{total}", f"loss {m['loss']:.4f}", f"lr {m['learning_rate']:.2e}"]
    if "eval_loss" in m:
        parts.append(f"eval {m['eval_loss']:.4f}")
    if m.get("tokens_per_sec"):
        parts.append(f"{m['tokens_per_sec']:,.0f} tok/s")
        parts.append(f"MFU {100 * m['mfu']:.1f}%")
    parts.append(f"ETA {format_duration(eta_s)}")
    return " | ".join(parts)


class MetricsWriter:
    """Appends one JSON object per logged step to metrics.jsonl (with the run id, when given) and mirrors
    scalars to TensorBoard. Each row is one `write` of a whole line, flushed at once."""

    def __init__(self, workdir: str, enabled: bool = True, run_id: str | None = None):
        self.enabled, self.run_id = enabled, run_id
        if not enabled:
            return
        path = os.path.join(workdir, "metrics.jsonl")
        _drop_partial_last_line(path)
        self._jsonl = open(path, "a", buffering=1)
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        if self.run_id:
            record["run_id"] = self.run_id
        self._jsonl.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def _drop_partial_last_line(path: str) -> None:
    """A run killed while writing a row leaves it without its newline; cut it off so appends start clean."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf literals
    return value


def read_metrics(workdir: str) -> list[dict]:
    """Every row of metrics.jsonl; a last line cut short by a crash is skipped, any other bad line is an error."""
    path = os.path.join(workdir, "metrics.jsonl")
    lines = [line for line in read_text(path, "metrics file").splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):
                break  # the write of the last row was interrupted
            raise FileFormatError(f"metrics file {path}: line {number} is not JSON ({e.msg})") from e
    return rows
