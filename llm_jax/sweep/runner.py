"""Running a sweep: every member as its own `llm-jax train` process, N at a time, resumably.

A member is finished when its work directory holds `sweep_member.json` (written atomically after its process
exits 0; one that cannot be read counts as unfinished, so the member runs again and rewrites it); finished members
are skipped, and an interrupted one is simply launched again — `llm-jax train` resumes from its last checkpoint.
Each attempt's wall time is appended to `attempts.jsonl`; its output goes to `train.log`. Appended files are read
tolerantly: a line cut short by a crash is skipped (see `read_jsonl`).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

from llm_jax import fileio
from llm_jax.data.pipeline import data_specs, prepare_settings, prepared_dir, tokenizer_vocab_size
from llm_jax.fileio import FileFormatError, append_jsonl, atomic_write_json, read_json
from llm_jax.sweep.spec import Member, Sweep, SweepError, member_config, members, runs_root, train_args, workdir

DONE_FILE = "sweep_member.json"
LAUNCHERS = ("local", "slurm", "tpu")


def is_done(sweep: Sweep, member: Member) -> bool:
    """The member's `sweep_member.json` exists and is a JSON object (a damaged one means: run it again)."""
    path = os.path.join(workdir(sweep, member), DONE_FILE)
    if not os.path.isfile(path):
        return False
    try:
        read_json(path, "sweep member record")
    except FileFormatError:
        return False
    return True


def emit(sweep: Sweep, launcher: str = "local") -> list[str]:
    """One shell command per unfinished member, for a cluster scheduler or a shell loop."""
    if launcher not in LAUNCHERS:
        raise SweepError(f"--emit takes one of {', '.join(LAUNCHERS)}, not {launcher!r}")
    lines = []
    for member in members(sweep):
        member_config(sweep, member)
        if is_done(sweep, member):
            continue
        args = shlex.join(train_args(sweep, member)[1:])
        lines.append({
            "local": f"llm-jax train {args}",
            "slurm": f"sbatch --job-name={shlex.quote(sweep.name + '/' + member.name)} launch/slurm.sbatch {args}",
            "tpu": f"launch/tpu_vm.sh --name TPU_NAME --zone ZONE --type TPU_TYPE -- {args}",
        }[launcher])
    return lines


def _warm_data_cache(sweep: Sweep, todo: list[Member], log) -> None:
    """Prepare each distinct dataset once here, so parallel members do not race to build the same cache entry."""
    seen = set()
    for member in todo:
        cfg = member_config(sweep, member)
        key = prepare_settings(cfg.data, tokenizer_vocab_size(cfg))
        if key not in seen:
            seen.add(key)
            for spec in data_specs(cfg.data):
                prepared_dir(spec, cfg.data, tokenizer_vocab_size(cfg), cfg.model.seq_len, log=log)


def _launch(sweep: Sweep, member: Member, python: str):
    wd = workdir(sweep, member)
    os.makedirs(wd, exist_ok=True)
    log_file = open(os.path.join(wd, "train.log"), "a")
    cmd = [python, "-m", "llm_jax", *train_args(sweep, member), "--json"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log_file.write(f"$ {shlex.join(cmd)}\n")
    log_file.flush()
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, text=True, env=env)
    return proc, log_file, time.time()


def _finish(sweep: Sweep, member: Member, proc, log_file, started: float) -> int:
    log_file.close()
    wd = workdir(sweep, member)
    seconds = time.time() - started
    append_jsonl(os.path.join(wd, "attempts.jsonl"),
                 {"returncode": proc.returncode, "wall_seconds": seconds, "finished": time.time()})
    if proc.returncode == 0:
        summary = _last_summary(os.path.join(wd, "train.log"))
        record = {"member": member.name, "variant": member.variant, "seed": member.seed, "meta": member.meta,
                  "overrides": member.overrides, "summary": summary,
                  "command": "llm-jax " + shlex.join(train_args(sweep, member)),
                  "wall_seconds": wall_seconds_sum(read_attempts(wd))}
        atomic_write_json(os.path.join(wd, DONE_FILE), record, indent=1)
    return proc.returncode


def read_log_lines(path: str) -> list[str]:
    """The lines of a log a process wrote (invalid UTF-8 replaced); none if it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise SweepError(f"cannot read {path}: {e.strerror or e}") from e


def _last_summary(log_path: str) -> dict:
    """The JSON summary `llm-jax train --json` prints as its last line of output."""
    for line in reversed(read_log_lines(log_path)):
        if line.startswith("{"):
            try:
                summary = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(summary, dict):
                return summary
    return {}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop(sweep: Sweep, running: list, log) -> None:
    """SIGTERM to every running member: each writes a checkpoint and exits 75, so the next `run` resumes it."""
    for _, proc, _, _ in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for member, proc, log_file, started in running:
        proc.wait()
        _finish(sweep, member, proc, log_file, started)
    log(f"interrupted: {len(running)} running member(s) stopped at a checkpoint; `sweep run` again resumes them")


def read_jsonl(path: str) -> list[dict]:
    """Every object of one of the sweep's append-only JSON-lines logs (none if it does not exist yet); a torn
    last line is skipped (fileio.read_jsonl)."""
    try:
        return fileio.read_jsonl(path, "sweep log", missing_ok=True)
    except fileio.FileFormatError as e:
        raise SweepError(str(e)) from e


def read_attempts(wd: str) -> list[dict]:
    return read_jsonl(os.path.join(wd, "attempts.jsonl"))


def wall_seconds_sum(records: list[dict]) -> float:
    """Summed `wall_seconds` of attempt or run records (a record without a number counts as 0)."""
    return float(sum(a.get("wall_seconds", 0) for a in records
                     if isinstance(a.get("wall_seconds", 0), (int, float))))


def run(sweep: Sweep, parallel: int = 1, only: str | None = None, python: str = sys.executable, log=print) -> dict:
    """Runs every unfinished member (or those whose name contains `only`); returns counts and failures."""
    if parallel < 1:
        raise SweepError(f"--parallel must be at least 1, got {parallel}")
    chosen = [m for m in members(sweep) if only is None or only in m.name]
    for member in chosen:
        member_config(sweep, member)            # every member's overrides are valid before the first launch
    todo = [m for m in chosen if not is_done(sweep, m)]
    log(f"sweep {sweep.name}: {len(chosen)} members, {len(chosen) - len(todo)} finished, {len(todo)} to run "
        f"({parallel} at a time) under {runs_root(sweep)}")
    if todo:
        _warm_data_cache(sweep, todo, log)
    running, failed, statuses, queue, t0 = [], [], [], list(todo), time.time()
    interrupted = False
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while queue or running:
            while queue and len(running) < parallel:
                member = queue.pop(0)
                log(f"  start {member.name}")
                running.append((member, *_launch(sweep, member, python)))
            time.sleep(0.5)
            for item in [r for r in running if r[1].poll() is not None]:
                running.remove(item)
                member, proc, log_file, started = item
                rc = _finish(sweep, member, proc, log_file, started)
                done = len(todo) - len(queue) - len(running)
                status = "done" if rc == 0 else f"FAILED (exit {rc}; see {workdir(sweep, member)}/train.log)"
                log(f"  {status}: {member.name} in {time.time() - started:.0f} s [{done}/{len(todo)}, "
                    f"{time.time() - t0:.0f} s elapsed]")
                if rc != 0:
                    failed.append(member.name)
                    statuses.append(rc)
    except KeyboardInterrupt:
        interrupted = True
        _stop(sweep, running, log)
    finally:
        signal.signal(signal.SIGTERM, previous)
    result = {"members": len(chosen), "ran": len(todo), "failed": failed, "wall_seconds": time.time() - t0,
              "parallel": parallel, "interrupted": interrupted, "first_failure_status": statuses[0] if statuses else 0}
    if todo:
        append_jsonl(os.path.join(runs_root(sweep), "sweep_runs.jsonl"), result)
    return result
