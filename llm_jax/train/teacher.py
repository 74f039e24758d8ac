"""The teacher of `train.objective=distill`: its top-k next-token distribution at the distillation temperature is
added to every batch the student trains or is evaluated on.

- online (`train.teacher` = a work directory): the teacher's forward pass on each batch, on the student's mesh;
- offline (`train.teacher` = a directory written by `llm-jax distill dump`): the same top-k arrays computed once
  for the run's batches (`dump`: train steps 0..N-1 and the evaluation batches, in the loader's deterministic
  order) and read back per step from memory-mapped files, so the teacher is not loaded while the student trains.

The teacher and the student must share a tokenizer (the student's data is tokenized with data.tokenizer, which
must be the teacher's): checked on a sample text, with one error naming the fix; a dump must belong to the run's
data (fingerprint), batch size, length, k and temperature.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.data.loader import BatchLoader
from llm_jax.data.pipeline import training_data
from llm_jax.data.tokenizers import load_tokenizer
from llm_jax.errors import UserError
from llm_jax.fileio import atomic_write, check_new_output, read_bytes
from llm_jax.models import build_model
from llm_jax.parallel.mesh import batch_sharding, logical_shardings, unboxed
from llm_jax.train.state import init_params
from llm_jax.train.trainable import build_trainable

SAMPLE = "ROMEO: But soft, what light through yonder window breaks? 1234 + 56 = 1290\n"


class TeacherError(UserError):
    """The teacher cannot teach this student."""


class Teacher:
    def __init__(self, cfg, trainable, tokenizer, log=print):
        workdir = cfg.train.teacher
        path = os.path.join(workdir, "config.json")
        if not os.path.isfile(path):
            raise TeacherError(f"train.teacher={workdir!r} is not a work directory (no config.json)")
        t_cfg = config_lib.config_from_json(read_bytes(path, "teacher config").decode("utf-8"))
        if t_cfg.model.vocab_size != cfg.model.vocab_size or t_cfg.model.family != "decoder":
            raise TeacherError(f"train.teacher={workdir!r}: a decoder with model.vocab_size={t_cfg.model.vocab_size} "
                               f"cannot teach a student of model.vocab_size={cfg.model.vocab_size}")
        teacher_tok = load_tokenizer(workdir)
        if teacher_tok.encode(SAMPLE) != tokenizer.encode(SAMPLE):
            raise TeacherError(f"the student's data is tokenized differently from the teacher {workdir}: set "
                               f"data.tokenizer to the teacher's tokenizer (a file in {workdir})")
        self.model = build_model(t_cfg.model)
        mesh, rules = trainable.mesh, trainable.rules
        boxed = jax.eval_shape(lambda r: init_params(self.model, t_cfg.model.seq_len, r), jax.random.key(0))
        shardings = logical_shardings(boxed, mesh, rules)
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unboxed(boxed),
                                shardings)
        self.params, step = checkpoint.restore_params(workdir, abstract)
        k, temperature = cfg.train.distill_top_k, cfg.train.distill_temperature
        out = batch_sharding(mesh, rules, ndim=3)

        def top_k(params, inputs_BL, segments_BL):
            logits_BLV = self.model.apply({"params": params}, inputs_BL, segments_BL=segments_BL)
            logps_BLK, ids_BLK = jax.lax.top_k(jax.nn.log_softmax(logits_BLV / temperature, axis=-1), k)
            return ids_BLK.astype(jnp.int32), logps_BLK  # over the whole vocabulary: their sum leaves the rest

        self._top_k = jax.jit(top_k, out_shardings=(out, out))
        log(f"distill: teacher {workdir} (step {step}, {sum(x.size for x in jax.tree.leaves(self.params)):,} "
            f"parameters), top {k} tokens at temperature {temperature}")

    def __call__(self, batch: dict) -> dict:
        """The device batch with `teacher_ids` and `teacher_logps` (B x L x k) added."""
        ids, logps = self._top_k(self.params, batch["inputs"], batch.get("segment_ids"))
        return {**batch, "teacher_ids": ids, "teacher_logps": logps}


DUMP_MANIFEST = "teacher_dump.json"
LOGPS = "float32 top-k of the whole vocabulary"  # earlier dumps held float16 renormalised over the k: refused


def teacher_feed(cfg, trainable, data, workdir=None, log=print):
    """(host batch, (split, index)) -> the device batch with the teacher's arrays: online or from a dump (the
    work directory is not needed)."""
    if os.path.isfile(os.path.join(cfg.train.teacher, DUMP_MANIFEST)):
        return OfflineTeacher(cfg, trainable, data, log)
    teacher = Teacher(cfg, trainable, data.tokenizer, log)
    return lambda host, where, params=None: teacher(trainable.to_device(host))


class OfflineTeacher:
    def __init__(self, cfg, trainable, data, log=print):
        directory = cfg.train.teacher
        manifest = json.loads(read_bytes(os.path.join(directory, DUMP_MANIFEST), "teacher dump manifest"))
        t = cfg.train
        wanted = {"fingerprint": data.fingerprint, "batch_size": t.batch_size, "seq_len": cfg.model.seq_len,
                  "top_k": t.distill_top_k, "temperature": t.distill_temperature, "logps": LOGPS}
        wrong = [f"{k} {manifest.get(k)!r} there, {v!r} here" for k, v in wanted.items() if manifest.get(k) != v]
        if wrong:
            raise TeacherError(f"train.teacher={directory!r} is a dump of other batches: {'; '.join(wrong)}")
        if manifest["train_steps"] < t.steps or manifest["val_batches"] < t.eval_batches:
            raise TeacherError(f"train.teacher={directory!r} holds {manifest['train_steps']} steps and "
                               f"{manifest['val_batches']} evaluation batches; the run needs {t.steps} and "
                               f"{t.eval_batches}: dump again with more")
        self.arrays = {(split, name): np.load(os.path.join(directory, f"{split}_{name}.npy"), mmap_mode="r")
                       for split in ("train", "val") for name in ("ids", "logps")}
        self.trainable = trainable
        pid, nproc = jax.process_index(), jax.process_count()
        self.rows = slice(pid * t.batch_size // nproc, (pid + 1) * t.batch_size // nproc)
        log(f"distill: teacher dump {directory} ({manifest['teacher']}, {manifest['train_steps']} steps, top "
            f"{manifest['top_k']} at temperature {manifest['temperature']})")

    def __call__(self, host: dict, where: tuple, params=None) -> dict:
        split, index = where
        extra = {"teacher_ids": np.asarray(self.arrays[split, "ids"][index, self.rows], np.int32),
                 "teacher_logps": np.asarray(self.arrays[split, "logps"][index, self.rows], np.float32)}
        return self.trainable.to_device({**host, **extra})


def dump(cfg, out: str, log=print) -> dict:
    """Writes the teacher's top-k arrays for the run `cfg` (train.teacher = the teacher's work directory): every
    train step's batch and the evaluation batches, in the loader's order, and the manifest checked on use."""
    check_new_output(out, flag="--out", error=TeacherError)
    if jax.process_count() > 1:
        raise TeacherError("distill dump runs as one process")
    t = cfg.train
    data = training_data(cfg, log=log)
    trainable = build_trainable(cfg)
    teacher = Teacher(cfg, trainable, data.tokenizer, log)
    loaders = {"train": (BatchLoader(data.train, t.batch_size, t.seed, weights=data.weights), t.steps),
               "val": (BatchLoader([data.val], t.batch_size, t.seed, shuffle=False), t.eval_batches)}
    os.makedirs(out, exist_ok=True)
    shape = (t.batch_size, cfg.model.seq_len, t.distill_top_k)
    with trainable.activate():
        for split, (loader, n) in loaders.items():
            ids = np.lib.format.open_memmap(os.path.join(out, f"{split}_ids.npy"), "w+", np.int32, (n,) + shape)
            logps = np.lib.format.open_memmap(os.path.join(out, f"{split}_logps.npy"), "w+", np.float32,
                                              (n,) + shape)
            for i in range(n):
                batch = teacher(trainable.to_device(loader.batch(i)))
                ids[i], logps[i] = jax.device_get(batch["teacher_ids"]), jax.device_get(batch["teacher_logps"])
                if (i + 1) % 100 == 0 or i + 1 == n:
                    log(f"distill dump: {split} {i + 1}/{n}")
            ids.flush()
            logps.flush()
    manifest = {"teacher": os.path.abspath(t.teacher), "fingerprint": data.fingerprint, "batch_size": t.batch_size,
                "seq_len": cfg.model.seq_len, "top_k": t.distill_top_k, "temperature": t.distill_temperature,
                "logps": LOGPS,
                "train_steps": t.steps, "val_batches": t.eval_batches}
    atomic_write(os.path.join(out, DUMP_MANIFEST), json.dumps(manifest, indent=2))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    return manifest | {"out": out, "bytes": size}
