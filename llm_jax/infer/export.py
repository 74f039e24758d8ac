"""`llm-jax export`: a parameters-only work directory (config.json, tokenizer, checkpoints/<step>/params) for
inference, evaluation, conversion, or fine-tuning elsewhere (`--config.checkpoint.restore_from=DIR`).

`--out` is checked before anything is loaded; every file is written atomically, config.json last, so an
`--out` that has a config.json is a complete work directory."""

from __future__ import annotations

import os
import shutil
import tempfile

import jax

from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.fileio import atomic_path, atomic_write, check_new_output
from llm_jax.data.chat import copy_tokenizer_extras
from llm_jax.infer.load import WorkdirError, load_workdir
from llm_jax.models import lora, peft


def save_tokenizer(tokenizer, out: str, source_workdir: str | None = None) -> str:
    """The tokenizer's files written into `out` atomically (tokenizers save into a directory: a scratch one here;
    an HF tokenizer brings its tokenizer_config.json), with the chat template of `source_workdir` when it has
    one. Returns the tokenizer file's name."""
    with tempfile.TemporaryDirectory(dir=out, prefix=".tokenizer-") as scratch:
        name = os.path.basename(tokenizer.save(scratch))
        for written in sorted(os.listdir(scratch)):
            with atomic_path(os.path.join(out, written)) as tmp:
                shutil.copyfile(os.path.join(scratch, written), tmp)
    if source_workdir is not None:
        copy_tokenizer_extras(source_workdir, out)
    return name


def export_params(workdir: str, out: str, step: int | None = None, merge_lora: bool = False,
                  adapters_only: bool = False) -> dict:
    """Writes the parameters-only copy; `merge_lora` folds a LoRA run's adapters into its weights (a plain model
    of the same shape, model.peft="none"); `adapters_only` writes a PEFT run's added parameters alone (config.json
    + checkpoint: `generate/serve --adapter` puts them on the base)."""
    check_new_output(out, flag="--out", error=WorkdirError)
    loaded = load_workdir(workdir, step)
    params, cfg = loaded.params, loaded.cfg
    if merge_lora:
        if cfg.model.peft == "none":
            raise WorkdirError(f"--merge-lora: {workdir} has no adapters (model.peft='none')")
        params = lora.merge(jax.device_get(params), cfg.model)
        cfg = config_lib.config_from_json(config_lib.to_json(cfg))
        cfg.model.peft = "none"
    if adapters_only:
        if cfg.model.peft == "none":
            raise WorkdirError(f"--adapters-only: {workdir} has no adapters (model.peft='none')")
        params = peft.split(jax.device_get(params))[1]
    os.makedirs(out, exist_ok=True)
    checkpoint.save_params(out, params, loaded.step)
    tokenizer_file = save_tokenizer(loaded.tokenizer, out, workdir)
    atomic_write(os.path.join(out, "config.json"), config_lib.to_json(cfg))
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    return {"out": out, "step": loaded.step, "tokenizer": tokenizer_file, "bytes": size}
