"""Launch scripts: the commands their --dry-run prints, and a real SLURM cluster running a 2-task job."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from helpers import REPO


def dry_run(*args, env=None):
    proc = subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()


def test_tpu_vm_single_slice_creation_install_and_run():
    lines = dry_run("launch/tpu_vm.sh", "--name", "tpu1", "--zone", "us-east5-a", "--type", "v5p-128", "--create",
                    "--project", "proj", "--dry-run", "--", "--config", "configs/llama_1b.py", "--workdir", "gs://b/r")
    assert lines[0] == ("gcloud compute tpus tpu-vm create tpu1 --zone=us-east5-a --project=proj "
                        "--accelerator-type=v5p-128 --version=v2-alpha-tpuv5")
    assert any(line.startswith("gcloud compute tpus tpu-vm scp /tmp/llm_jax_src.tgz tpu1:") and "--worker=all" in line
               for line in lines)
    run = [line for line in lines if "python3 -m llm_jax train" in line]
    assert len(run) == 1 and "--worker=all" in run[0]
    assert "train --config configs/llama_1b.py --workdir gs://b/r" in run[0]


def test_tpu_vm_queued_multi_slice():
    lines = dry_run("launch/tpu_vm.sh", "--name", "big", "--zone", "z", "--type", "v5e-256", "--queued", "--slices",
                    "4", "--dry-run", "--", "--config.mesh.dcn_data=4")
    assert lines[0].startswith("gcloud compute tpus queued-resources create big") and "--node-count=4" in lines[0]
    assert "until gcloud compute tpus queued-resources describe big" in lines[1]
    runs = [line for line in lines if "llm_jax train --config.mesh.dcn_data=4" in line]
    assert [r.split()[5] for r in runs] == ["big-0", "big-1", "big-2", "big-3"]


def test_tpu_vm_rejects_missing_options():
    proc = subprocess.run(["bash", "launch/tpu_vm.sh", "--zone", "z"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_slurm_and_gke_dry_runs():
    lines = dry_run("launch/slurm.sbatch", "--dry-run", "--config", "configs/llama_7b.py",
                    env={"SRUN_ARGS": "--gpus-per-task=1"})
    assert lines[0] == "srun --kill-on-bad-exit=1 --gpus-per-task=1 python3 -m llm_jax train --config configs/llama_7b.py"
    assert "scontrol requeue" in lines[1]
    yaml = pytest.importorskip("yaml")
    out = dry_run("launch/gke.sh", "--name", "run1", "--image", "img:1", "--processes", "4", "--gpus", "8",
                  "--dry-run", "--", "--workdir", "/data/r")
    assert out[-1].startswith("kubectl apply")
    manifest = yaml.safe_load("\n".join(out[:-1]))
    job = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]
    container = job["template"]["spec"]["containers"][0]
    assert job["parallelism"] == 4 and container["args"] == ["--workdir", "/data/r"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 8}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LLM_JAX_COORDINATOR"] == "run1-workers-0-0.run1:1234" and env["LLM_JAX_NUM_PROCESSES"] == "4"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A real single-node SLURM (slurmctld + slurmd + munge) started by launch/slurm_local_cluster.sh."""
    directory = str(tmp_path_factory.mktemp("slurm"))
    proc = subprocess.run(["bash", "launch/slurm_local_cluster.sh", "start", directory], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode == 3:
        pytest.skip(f"SLURM cannot be installed or started here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    yield os.path.join(directory, "slurm.conf")
    subprocess.run(["bash", "launch/slurm_local_cluster.sh", "stop", directory], cwd=REPO)


def test_sbatch_runs_a_two_task_training_job_to_completion(slurm, small_corpus, tmp_path):
    env = dict(os.environ, SLURM_CONF=slurm, LLM_JAX=f"{sys.executable} -m llm_jax", LLM_JAX_LOCAL_DEVICES="2",
               JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    env.pop("XLA_FLAGS", None)
    workdir, output = tmp_path / "run", tmp_path / "job.out"
    args = ["--workdir", str(workdir), f"--config.data.corpus={small_corpus}", "--config.model.vocab_size=384",
            "--config.model.seq_len=16", "--config.model.d_model=32", "--config.model.n_layers=2",
            "--config.model.n_heads=4", "--config.train.steps=10", "--config.train.batch_size=8",
            "--config.train.warmup_steps=2", "--config.train.log_every=5", "--config.train.eval_every=0",
            "--config.train.eval_batches=2", "--config.mesh.data=2", "--config.mesh.fsdp=2"]
    submit = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--overcommit", f"--output={output}",
                             f"--chdir={REPO}", "launch/slurm.sbatch", *args], cwd=REPO, env=env,
                            capture_output=True, text=True)
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    deadline = time.time() + 600
    while subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, "the SLURM job did not finish in 10 minutes"
        time.sleep(2)
    log = output.read_text()
    assert "distributed: process 0 of 2, 2 local of 4 devices" in log and "process 1 of 2" in log
    with open(workdir / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert records[-1]["step"] == 10 and "eval_loss" in records[-1]
    state = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    assert "JobState=COMPLETED" in state and "ExitCode=0:0" in state
