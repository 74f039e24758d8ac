"""Where a run reports: the console progress line, `metrics.jsonl` and TensorBoard event files."""

from __future__ import annotations

import contextlib
import json
import math
import os

from llm_jax.fileio import drop_torn_last_line, os_error, read_jsonl


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
    parts += [f"{k.removeprefix('eval_')} {v:.4f}" for k, v in m.items() if k.startswith("eval_") and k != "eval_loss"]
    if "stats/moe_dropped" in m:  # routing health of an MoE model: expert shares (min-max) and dropped tokens
        parts.append(f"experts {m['stats/moe_expert_share_min']:.2f}-{m['stats/moe_expert_share_max']:.2f} "
                     f"dropped {m['stats/moe_dropped']:.3f}")
    if "stats/kl" in m and "stats/reward" in m:  # policy optimisation: the rollouts' reward and KL to the reference
        parts.append(f"rollout reward {m['stats/reward']:.3f} kl {m['stats/kl']:.4f}")
    if m.get("tokens_per_sec"):
        parts.append(f"{m['tokens_per_sec']:,.0f} tok/s")
        parts.append(f"MFU {100 * m['mfu']:.1f}%")
    parts.append(f"ETA {format_duration(eta_s)}")
    return " | ".join(parts)


class MetricsWriter:
    """Appends one JSON object per logged step to metrics.jsonl (with the run id, when given) and mirrors
    scalars to TensorBoard. Each row is one `write` of a whole line, flushed at once."""

    def __init__(self, workdir: str, enabled: bool = True, run_id: str | None = None):
        self.enabled, self.run_id, self.workdir = enabled, run_id, workdir
        if not enabled:
            return
        path = os.path.join(workdir, "metrics.jsonl")
        with self._storage("open"):
            drop_torn_last_line(path)
            self._jsonl = open(path, "a", buffering=1)
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    @contextlib.contextmanager
    def _storage(self, action: str):
        """OSErrors (a full disk) become one StorageError naming the work directory."""
        try:
            yield
        except OSError as e:
            raise os_error(e, f"{action} the metrics (metrics.jsonl, tensorboard/) of", self.workdir) from e

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        if self.run_id:
            record["run_id"] = self.run_id
        with self._storage("write"):
            self._jsonl.write(json.dumps(record) + "\n")
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            with self._storage("close"):
                try:
                    self._jsonl.close()
                finally:
                    self._tb.close()


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf literals
    return value


def read_metrics(workdir: str) -> list[dict]:
    """Every row of metrics.jsonl (a last row cut short by a crash is skipped)."""
    return read_jsonl(os.path.join(workdir, "metrics.jsonl"), "metrics file")
