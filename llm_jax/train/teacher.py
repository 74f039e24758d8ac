"""The teacher of `train.objective=distill`: a frozen work directory whose top-k next-token distribution at the
distillation temperature is added to every batch before the student's step (online distillation: the teacher's
forward pass on the same batch, on the same mesh).

The teacher and the student must share a tokenizer (the student's data is tokenized with data.tokenizer, which
must be the teacher's): checked on a sample text before training, with one error naming the fix.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.data.tokenizers import load_tokenizer
from llm_jax.errors import UserError
from llm_jax.fileio import read_bytes
from llm_jax.models import build_model
from llm_jax.parallel.mesh import batch_sharding, logical_shardings, unboxed
from llm_jax.train.state import init_params

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
            values_BLK, ids_BLK = jax.lax.top_k(logits_BLV / temperature, k)
            return ids_BLK.astype(jnp.int32), jax.nn.log_softmax(values_BLK, axis=-1)  # renormalised over the k

        self._top_k = jax.jit(top_k, out_shardings=(out, out))
        log(f"distill: teacher {workdir} (step {step}, {sum(x.size for x in jax.tree.leaves(self.params)):,} "
            f"parameters), top {k} tokens at temperature {temperature}")

    def __call__(self, batch: dict) -> dict:
        """The device batch with `teacher_ids` and `teacher_logps` (B x L x k) added."""
        ids, logps = self._top_k(self.params, batch["inputs"], batch.get("segment_ids"))
        return {**batch, "teacher_ids": ids, "teacher_logps": logps}
