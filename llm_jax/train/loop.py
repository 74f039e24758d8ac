"""The training loop: config -> mesh -> sharded state -> data -> jitted steps -> metrics and checkpoints.

Failure handling (docs/reliability.md): resume from the newest intact checkpoint; SIGTERM/SIGINT finish the
step, checkpoint synchronously and exit with EXIT_PREEMPTED; a halted step (non-finite loss under
train.nonfinite=stop, or too many loss spikes) checkpoints the last good state and stops; a checkpoint that
cannot be written stops the run with the last good one intact.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable

import jax
import numpy as np

from llm_jax import checkpoint, fileio
from llm_jax import config as config_lib
from llm_jax.data.chat import CHAT_TEMPLATE_FILE
from llm_jax.data.loader import BatchLoader
from llm_jax.data.pipeline import training_data
from llm_jax.errors import HaltedError, UserError
from llm_jax.hardware import peak_flops
from llm_jax.models.accounting import flops_per_token, param_count
from llm_jax.objectives.dpo import reference_logps
from llm_jax.parallel import distributed
from llm_jax.parallel.pipeline import bubble_fraction
from llm_jax.train import workdir as workdir_lib
from llm_jax.train.downstream import Downstream
from llm_jax.train.metrics import MetricsWriter, progress_line
from llm_jax.train.preemption import Preempted, PreemptionWatcher
from llm_jax.train.profile import StepProfiler
from llm_jax.train.reference import added_params, is_new_param, reference_params
from llm_jax.train.rollouts import Rollouts
from llm_jax.train.teacher import teacher_feed
from llm_jax.train.trainable import Trainable, build_trainable

# Objectives whose batches are made during training, from the loader's rows:
# FEEDS[objective](cfg, trainable, data, workdir, log) -> feed(host batch, (split, index), params) -> device batch.
FEEDS = {"distill": teacher_feed, "grpo": Rollouts, "ppo": Rollouts}


class TrainingError(UserError):
    """The run cannot start as asked (e.g. a work directory whose checkpoints belong to another model)."""


@dataclasses.dataclass
class Evaluator:
    """Mean objective loss over a fixed set of held-out batches (the same ones at every evaluation); the
    objective's extra metrics (e.g. MLM accuracy) of the last evaluation are in `metrics` as {"eval_<name>": value}."""
    loader: BatchLoader
    num_batches: int
    trainable: Trainable
    metrics: dict = dataclasses.field(default_factory=dict)
    feed: Callable | None = None  # (host batch, ("val", i), params) -> the device batch (default: to_device)

    def __call__(self, params) -> float:
        total, count, sums = 0.0, 0.0, {}
        for i in range(self.num_batches):
            host = self.loader.batch(i)
            batch = self.feed(host, ("val", i), params) if self.feed else self.trainable.to_device(host)
            loss_sum, weight, extra = self.trainable.eval_step(params, batch)
            total, count = total + float(loss_sum), count + float(weight)
            for name, (num, den) in extra.items():
                sums[name] = (sums.get(name, (0.0, 0.0))[0] + float(num), sums.get(name, (0.0, 0.0))[1] + float(den))
        self.metrics = {f"eval_{name}": num / max(den, 1.0) for name, (num, den) in sums.items()}
        return total / count


def resume_check(cfg, workdir: str, log):
    """check_config for Checkpointer.restore_latest: refuses a checkpoint whose saved config differs in a key
    that cannot change on resume; reports the changes that can (train/workdir.py's policy)."""
    def check(step: int, saved: dict | None) -> None:
        if saved is None:
            path = os.path.join(workdir, "config.json")
            saved = fileio.read_json(path, "work directory config") if os.path.isfile(path) else None
        if saved is None:
            log(f"warning: checkpoint {step} carries no config; only its arrays' shapes are checked")
            return
        refused, data_order, allowed = workdir_lib.resume_differences(saved, cfg.to_dict())
        if refused:
            raise TrainingError(
                f"cannot resume {workdir} from its checkpoint at step {step}: {'; '.join(refused)} (there -> now). "
                f"Model keys that define the parameters cannot change on resume (train.*, checkpoint.*, mesh.*, "
                f"data.* and model compute settings can; docs/reliability.md). Use another --workdir, or --restart "
                f"to move the old run to {os.path.join(workdir, 'previous')}/ and start from step 0")
        if allowed:
            log(f"resuming with changed settings: {'; '.join(allowed)}")
        if data_order:
            log(f"warning: resuming with changed data settings ({'; '.join(data_order)}): batches from here on "
                f"differ from the interrupted run's")
    return check


def restore_or_init(cfg, ckpt: checkpoint.Checkpointer, trainable: Trainable, log, workdir: str):
    """The newest intact checkpoint of this run, else checkpoint.restore_from, else a fresh state."""
    abstract = trainable.abstract
    params, train, step = ckpt.restore_latest(abstract, resume_check(cfg, workdir, log))
    if step is not None:
        log(f"resuming from the checkpoint at step {step}" if train else
            f"starting from the parameters of the checkpoint at step {step} (fresh optimizer state)")
    elif cfg.checkpoint.restore_from:
        state = trainable.init_state()
        params, train, step = restore_from(cfg, trainable, state.params, log)
        return state.replace(params=params) if train is None else abstract.replace(params=params, **train)
    if train is not None:
        return abstract.replace(params=params, **train)
    state = trainable.init_state()
    return state if params is None else state.replace(params=params)


def attach_reference_logps(cfg, trainable: Trainable, data, log) -> None:
    """DPO: every pair's reply log-probabilities under the reference — the model the policy started from
    (checkpoint.restore_from, new parameters as initialised) — added to the rows once, before training."""
    started = time.perf_counter()
    reference = reference_params(cfg, trainable)
    with trainable.activate():
        for rows in [*data.train, data.val]:
            rows.extra.update(reference_logps(trainable.model, reference, rows))
    log(f"dpo: reference log-probabilities of {sum(len(r) for r in [*data.train, data.val]):,} pairs from "
        f"{cfg.checkpoint.restore_from} in {time.perf_counter() - started:.0f}s")


def restore_from(cfg, trainable: Trainable, init_params, log=None):
    """(params, train fields or None, step) of checkpoint.restore_from laid out for this run; parameters this run
    adds (`is_new_param`) that it lacks come from `init_params` (then the optimizer state starts fresh too)."""
    abstract, path = trainable.abstract, cfg.checkpoint.restore_from
    added = added_params(trainable)
    params_only = cfg.checkpoint.restore_mode == "params" or bool(added)
    params, train, step = checkpoint.restore_other_run(path, abstract, params_only, (is_new_param, init_params))
    if log:
        log(f"starting from {path} (step {step}, {'parameters only' if params_only else 'full state'}"
            + (f"; {', '.join(added)} from initialisation where it has none" if added else "") + ")")
    return params, train, step


class StepTimer:
    """Seconds per step between syncs, excluding the first (compiling) step, evaluation and checkpointing."""

    def __init__(self):
        self.start, self.steps, self.history = None, 0, []

    def tick(self, metrics) -> None:
        if self.start is None:
            jax.block_until_ready(metrics)
            self.start = time.perf_counter()
        else:
            self.steps += 1

    def tokens_per_sec(self, tokens_per_step: int) -> float | None:
        if not self.steps:
            return None
        per_step = (time.perf_counter() - self.start) / self.steps
        self.history.append(per_step)
        return tokens_per_step / per_step

    @property
    def step_time(self) -> float:
        return float(np.median(self.history)) if self.history else float("nan")

    def restart(self) -> None:
        self.start, self.steps = time.perf_counter(), 0


def halt_message(cfg, metrics) -> str:
    bad = int(metrics["state_step"]) + 1
    if not math.isfinite(float(metrics["loss"])) or not math.isfinite(float(metrics["grad_norm"])):
        why = "a non-finite loss or gradient"
    else:
        why = f"{cfg.train.spike_limit + 1} loss spikes in a row (train.spike_factor={cfg.train.spike_factor})"
    return (f"stopped at step {bad}: {why} (train.nonfinite={cfg.train.nonfinite}); the last good state, step "
            f"{bad - 1}, is checkpointed. Resume after lowering train.lr, or set train.nonfinite=skip")


def _close_all(closers, quiet: bool) -> None:
    """Runs every closer; the first error is raised after all have run — unless another exception is already
    on its way out (`quiet`), which a cleanup error (e.g. a full disk again) must not replace."""
    first = None
    for close in closers:
        try:
            close()
        except Exception as e:  # noqa: BLE001 (re-raised below unless quiet)
            first = first or e
    if first is not None and not quiet:
        raise first


def claim_workdir(workdir: str, run_id: str, restart: bool, log) -> workdir_lib.WorkdirLock | None:
    """Creates and locks the work directory (process 0 for all; every process learns the outcome), and with
    `restart` moves the previous run aside. Returns the held lock (None on other processes)."""
    workdir_lib.prepare(workdir)
    lock, error = None, None
    if distributed.is_primary():
        lock = workdir_lib.WorkdirLock(workdir, run_id, log)
        try:
            lock.acquire()
            if restart:
                workdir_lib.archive_previous_run(workdir, log)
        except Exception as e:  # noqa: BLE001 (re-raised below, after every process knows)
            error = e
        except BaseException:  # a signal during start-up: leave no lock behind
            lock.release()
            raise
    if distributed.any_process(error is not None):
        if error is not None:
            if lock is not None:
                lock.release()
            raise error
        raise TrainingError(f"process 0 could not claim work directory {workdir}; see its output")
    return lock


def train(cfg, workdir: str, log=print, restart: bool = False, workdir_scorer=None, task_runner=None) -> dict:
    """Runs (or resumes) training for `cfg` in `workdir`; returns the final summary. `restart` moves a previous
    run's files to `workdir/previous/` and starts from step 0 instead of resuming; `workdir_scorer` is handed to
    data preparation (a perplexity filter with a trained model); `task_runner` scores train.eval_tasks
    (train/downstream.py; `llm-jax train` passes llm_jax.eval.in_training.task_runner)."""
    run_id = workdir_lib.new_run_id()
    with PreemptionWatcher() as preemption:
        lock = claim_workdir(workdir, run_id, restart, log)
        try:
            return _train(cfg, workdir, log, run_id, preemption, workdir_scorer, task_runner)
        finally:
            if lock is not None:
                lock.release()


def _train(cfg, workdir: str, log, run_id: str, preemption: PreemptionWatcher, workdir_scorer=None,
           task_runner=None) -> dict:
    t_cfg = cfg.train
    log(f"run {run_id} in {workdir}")
    newest = checkpoint.newest_saved_config(workdir)
    if newest is not None:  # refuse an incompatible resume before spending time on data and compilation
        resume_check(cfg, workdir, log=lambda _: None)(*newest)
    data = training_data(cfg, log=log, workdir_scorer=workdir_scorer)

    trainable = build_trainable(cfg)
    mesh = trainable.mesh
    downstream = Downstream(cfg, workdir, data.tokenizer, task_runner, trainable.rules, log)  # files read now
    n_params = param_count(cfg.model)
    if trainable.mask is not None:  # train.trainable or model.peft: part of the model trains
        sizes = trainable.sizes()
        log(f"trainable: {sizes['trainable']:,} of {sizes['params']:,} parameters "
            f"({100 * sizes['trainable'] / sizes['params']:.2f}%) | optimizer state "
            f"{sizes['optimizer_bytes'] / 2**20:.2f} MiB")
    log(f"model: {n_params:,} parameters | mesh {dict(mesh.shape)} | {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s) | {t_cfg.steps} steps x {t_cfg.batch_size} x {cfg.model.seq_len} tokens")
    if cfg.mesh.stage > 1:
        micro, repeats = config_lib.pipeline_microbatches(cfg), cfg.mesh.pipeline_repeats
        log(f"pipeline: {cfg.mesh.stage} stages x {micro} micro-batches"
            f"{f' x {repeats} repeats (circular)' if repeats > 1 else ' (GPipe)'}, bubble "
            f"{100 * bubble_fraction(cfg.mesh.stage, micro, repeats):.1f}% of stage time")

    ckpt = checkpoint.Checkpointer(workdir, cfg.checkpoint, log)
    try:
        state = restore_or_init(cfg, ckpt, trainable, log, workdir)
    except BaseException:
        ckpt.close()
        raise
    if cfg.train.objective == "dpo":
        attach_reference_logps(cfg, trainable, data, log)
    if distributed.is_primary():  # only now: a refused resume must leave the old run's files as they were
        fileio.atomic_write(os.path.join(workdir, "config.json"), config_lib.to_json(cfg))
        data.tokenizer.save(workdir)
        if data.chat_template:  # a fine-tuned chat model answers through the template it was trained with
            fileio.atomic_write(os.path.join(workdir, CHAT_TEMPLATE_FILE), data.chat_template)
    start_step = int(state.step)
    saved_data = checkpoint.restore_data_state(ckpt.mngr, start_step) if ckpt.last_good is not None else None
    if saved_data and saved_data.get("fingerprint") != data.fingerprint:
        log(f"warning: the data changed since the checkpoint at step {start_step} (fingerprint "
            f"{saved_data.get('fingerprint')} -> {data.fingerprint}); batches from here on differ from the "
            f"interrupted run's")

    pid, nproc = jax.process_index(), jax.process_count()
    loader = BatchLoader(data.train, t_cfg.batch_size, t_cfg.seed, weights=data.weights, process_index=pid,
                         process_count=nproc)
    val_loader = BatchLoader([data.val], t_cfg.batch_size, t_cfg.seed, shuffle=False, process_index=pid,
                             process_count=nproc)
    feed = FEEDS[t_cfg.objective](cfg, trainable, data, workdir, log) if t_cfg.objective in FEEDS else None
    evaluate = Evaluator(val_loader, t_cfg.eval_batches, trainable, feed=feed)
    writer = MetricsWriter(workdir, enabled=pid == 0, run_id=run_id)
    profiler = StepProfiler(t_cfg.profile_steps, workdir, log)
    peak, peak_source = peak_flops()
    fpt = flops_per_token(cfg.model)
    tokens_per_step = t_cfg.batch_size * cfg.model.seq_len
    log(f"MFU peak: {peak / 1e12:.2f} TFLOP/s ({peak_source}); {fpt / 1e6:.1f} MFLOP per token")

    def save(state, wait=False):
        data_state = {"step": int(state.step), "seed": t_cfg.seed, "fingerprint": data.fingerprint}
        ckpt.save(state, data_state, cfg.to_dict(), wait=wait)

    eval_loss, tasks, failed = None, {}, True
    try:
        with trainable.activate():
            preemption.arm()
            if start_step == 0:
                eval_loss = evaluate(state.params)
                log(f"step 0 | eval {eval_loss:.4f} (unigram entropy {data.unigram_entropy:.4f})"
                    + "".join(f" | {k.removeprefix('eval_')} {v:.4f}" for k, v in evaluate.metrics.items()))
                tasks = downstream(state.params, 0)
                writer.write(0, {"eval_loss": eval_loss, "tokens_seen": 0, **evaluate.metrics, **tasks})
                if tasks:
                    log(downstream.line)
            pending, timer = [], StepTimer()
            batches = loader.iterate(start_step, prefetch=cfg.data.prefetch)
            for step in range(start_step, t_cfg.steps):
                profiler.before(step)
                host = next(batches)
                device = feed(host, ("train", step), state.params) if feed else trainable.to_device(host)
                state, metrics = trainable.train_step(state, device)
                done, is_last = step + 1, step + 1 == t_cfg.steps
                profiler.after(done, metrics)
                pending.append((done, metrics))
                timer.tick(metrics)
                preempted = preemption.requested  # read once: a signal arriving later waits for the next step
                log_now = done % t_cfg.log_every == 0 or is_last
                time_due = ckpt.time_due()
                if nproc > 1:  # processes must agree on every sync; they meet only at step-count sync points
                    regular = log_now or ckpt.steps_due(done) or is_last
                    preempted = regular and distributed.any_process(preempted)
                    time_due = regular and distributed.any_process(time_due)
                save_now = ckpt.steps_due(done) or time_due or is_last or preempted
                if not (log_now or save_now):
                    continue
                fetched = jax.device_get(pending)  # the only host syncs: at log, checkpoint and signal steps
                pending = []
                if fetched[-1][1]["halted"]:
                    save(state, wait=True)
                    raise HaltedError(halt_message(cfg, fetched[-1][1]))
                if log_now:
                    record = {k: float(v) for k, v in fetched[-1][1].items() if k not in ("halted", "state_step")}
                    record["skipped"] = float(sum(m["skipped"] for _, m in fetched))
                    record["tokens_seen"] = done * tokens_per_step
                    tokens_per_sec = timer.tokens_per_sec(tokens_per_step)
                    if tokens_per_sec:
                        record.update(tokens_per_sec=tokens_per_sec, mfu=tokens_per_sec * fpt / peak)
                    if (t_cfg.eval_every and done % t_cfg.eval_every == 0) or is_last:
                        eval_loss = record["eval_loss"] = evaluate(state.params)
                        tasks = downstream(state.params, done)
                        record.update(evaluate.metrics, **tasks)
                    writer.write(done, record)
                    log(progress_line(done, t_cfg.steps, record, (t_cfg.steps - done) * timer.step_time))
                    if any(k.startswith("eval/") for k in record):
                        log(downstream.line)
                if save_now:
                    save(state, wait=preempted)
                if preempted:
                    raise Preempted(done, preemption.signal_name)
                timer.restart()  # evaluation and checkpoint hand-off do not count as step time
        failed = False
    finally:
        _close_all((profiler.close, ckpt.close, writer.close), quiet=failed)

    if eval_loss is None:
        log(f"nothing to do: the checkpoint is already at step {start_step} of {t_cfg.steps}")
        with trainable.activate():
            eval_loss = evaluate(state.params)
    summary = {
        "step": int(state.step), "eval_loss": eval_loss, "unigram_entropy": data.unigram_entropy,
        "params": n_params, "tokens_seen": int(state.step) * tokens_per_step, **evaluate.metrics, **tasks,
    }
    log(f"done: validation loss {eval_loss:.4f} nats/token vs unigram entropy "
        f"{data.unigram_entropy:.4f} (a context-free model) | perplexity {math.exp(eval_loss):.2f} | "
        + "".join(f"{k.removeprefix('eval_')} {v:.4f} | " for k, v in evaluate.metrics.items()) +
        f"work directory {workdir}")
    return summary
