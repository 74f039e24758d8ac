import csv
import json

from helpers import run_cli

SWEEP = '''
from llm_jax.sweep import Sweep

def get_sweep():
    return Sweep(name="t", base="configs/tiny.py",
                 variants={{"ln": {{"model.norm": "layernorm"}}, "rms": {{"model.norm": "rmsnorm"}}}},
                 overrides={{"data.corpus": {corpus!r}, "model.vocab_size": 384, "model.seq_len": 32,
                            "model.d_model": 32, "model.n_layers": 2, "model.n_heads": 2, "train.steps": 12,
                            "train.batch_size": 4, "train.warmup_steps": 2, "train.eval_every": 6,
                            "train.eval_batches": 2, "train.log_every": 6, "checkpoint.every": 6}},
                 seeds=[0], runs_dir={runs!r}, results_dir={results!r})
'''


def test_sweep_runs_resumes_skips_emits_and_reports(tmp_path, small_corpus):
    path = tmp_path / "sweep.py"
    runs, results = tmp_path / "runs", tmp_path / "results"
    path.write_text(SWEEP.format(corpus=small_corpus, runs=str(runs), results=str(results)))

    emitted = run_cli("sweep", "run", str(path), "--emit", "slurm")
    assert emitted.returncode == 0, emitted.stderr[-2000:]
    lines = emitted.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("sbatch --job-name=t/") for line in lines)
    assert "--config.model.norm=rmsnorm" in lines[1] and "launch/slurm.sbatch train" not in lines[1]

    # An interrupted member: its run stopped at step 6 with a checkpoint; the sweep must resume it.
    member_args = run_cli("sweep", "run", str(path), "--emit").stdout.splitlines()[0].split()[1:]
    partial = run_cli(*member_args, "--config.train.steps=6")
    assert partial.returncode == 0, partial.stderr[-2000:]

    first = run_cli("sweep", "run", str(path), "--parallel", "2", "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["ran"] == 2 and summary["failed"] == []
    assert "resuming from the checkpoint at step 6" in (runs / "ln-seed0" / "train.log").read_text()
    done = json.loads((runs / "rms-seed0" / "sweep_member.json").read_text())
    assert done["summary"]["step"] == 12 and done["command"].startswith("llm-jax train --config configs/tiny.py")

    again = run_cli("sweep", "run", str(path), "--json")
    assert json.loads(again.stdout.strip().splitlines()[-1])["ran"] == 0

    report = run_cli("sweep", "report", str(path))
    assert report.returncode == 0, report.stderr[-2000:]
    rows = list(csv.DictReader(open(results / "members.csv")))
    assert [r["member"] for r in rows] == ["ln-seed0", "rms-seed0"]
    assert all(float(r["final_eval_loss"]) > 0 and int(r["tokens"]) == 12 * 4 * 32 for r in rows)
    table = (results / "README.md").read_text()
    assert "| ln |" in table and "| rms |" in table and f"llm-jax sweep run {path}" in table
    assert (results / "loss_curves.png").stat().st_size > 5000


def test_sweep_with_a_bad_member_fails_before_launching_anything(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text('from llm_jax.sweep import Sweep\n\ndef get_sweep():\n'
                    '    return Sweep(name="b", base="configs/tiny.py", variants={"x": {"model.n_heads": 3}},\n'
                    f'                 runs_dir={str(tmp_path / "runs")!r})\n')
    proc = run_cli("sweep", "run", str(path))
    assert proc.returncode == 2 and "member x-seed0" in proc.stderr and "n_heads" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_sigterm_stops_running_members_at_a_checkpoint_and_the_next_run_resumes(tmp_path, small_corpus):
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import REPO
    path = tmp_path / "sweep.py"
    runs = tmp_path / "runs"
    path.write_text(SWEEP.format(corpus=small_corpus, runs=str(runs), results=str(tmp_path / "results"))
                    .replace('"train.steps": 12', '"train.steps": 3000').replace(
                        'variants={"ln": {"model.norm": "layernorm"}, "rms": {"model.norm": "rmsnorm"}}',
                        'variants={"ln": {"model.norm": "layernorm"}}'))
    runner = subprocess.Popen([sys.executable, "-m", "llm_jax", "sweep", "run", str(path)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = runs / "ln-seed0" / "train.log"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and "step  " in log.read_text()):
        time.sleep(0.5)
    runner.send_signal(signal.SIGTERM)
    out, err = runner.communicate(timeout=300)
    assert runner.returncode == 75, err[-2000:]
    attempts = [json.loads(line) for line in (runs / "ln-seed0" / "attempts.jsonl").read_text().splitlines()]
    assert attempts[-1]["returncode"] == 75 and os.listdir(runs / "ln-seed0" / "checkpoints")
    assert not (runs / "ln-seed0" / "sweep_member.json").exists() and "interrupted" in out
