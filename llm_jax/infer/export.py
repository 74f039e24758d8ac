"""`llm-jax export`: a parameters-only work directory (config.json, tokenizer, checkpoints/<step>/params) for
inference, evaluation, conversion, or fine-tuning elsewhere (`--config.checkpoint.restore_from=DIR`)."""

from __future__ import annotations

import os

from llm_jax import config as config_lib
from llm_jax.infer.load import WorkdirError, load_workdir
from llm_jax.train import checkpoint


def export_params(workdir: str, out: str, step: int | None = None) -> dict:
    if os.path.exists(out) and os.listdir(out):
        raise WorkdirError(f"{out!r} exists and is not empty; choose a new --out")
    loaded = load_workdir(workdir, step)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(config_lib.to_json(loaded.cfg))
    tokenizer_file = os.path.basename(loaded.tokenizer.save(out))
    checkpoint.save_params(out, loaded.params, loaded.step)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    return {"out": out, "step": loaded.step, "tokenizer": tokenizer_file, "bytes": size}
