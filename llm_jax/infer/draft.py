"""A draft model for speculative decoding made from the target itself: its first N layers, then the target's own
final norm and head (tied embeddings stay tied) — an early-exit ("self-speculative") draft. It shares the target's
tokenizer by construction and needs no training; how often the target agrees with it is measured, not assumed
(docs/inference.md). `llm-jax convert truncate --workdir W --layers N --out D` writes it as a normal work
directory (config.json with model.n_layers = N, the tokenizer files, checkpoints/0 with the parameters).
"""

from __future__ import annotations

import os
import shutil

import jax

from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.errors import UserError
from llm_jax.fileio import atomic_path, atomic_write, check_new_output
from llm_jax.infer.load import abstract_params, load_workdir
from llm_jax.data.chat import copy_tokenizer_extras
from llm_jax.infer.speculative import TOKENIZER_FILES
from llm_jax.models import build_model


def first_layers(params: dict, abstract: dict) -> dict:
    """`params` cut to the shapes of `abstract` (the same model with fewer layers): the stacked layer leaves keep
    their first entries along the leading (layers) axis; every other leaf must already fit."""
    def cut(path, leaf, want):
        if leaf.shape == want.shape:
            return leaf
        if leaf.shape[1:] != want.shape[1:] or leaf.shape[0] < want.shape[0]:
            raise UserError(f"parameter {jax.tree_util.keystr(path)} of shape {leaf.shape} cannot be cut to "
                            f"{want.shape}")
        return leaf[:want.shape[0]]
    return jax.tree_util.tree_map_with_path(cut, params, abstract)


def truncate_workdir(workdir: str, n_layers: int, out: str, log=None) -> dict:
    """Writes the first `n_layers` layers of `workdir`'s model (+ final norm and head) as the work directory `out`;
    config.json is written last, so a directory that has one is complete."""
    check_new_output(out, flag="--out")
    loaded = load_workdir(workdir, log=log)
    m = loaded.cfg.model
    if m.family != "decoder":
        raise UserError(f"convert truncate makes a draft of a decoder-only model; {workdir} holds "
                        f"model.family={m.family!r}")
    if not 1 <= n_layers < m.n_layers:
        raise UserError(f"--layers {n_layers}: a draft keeps 1 to {m.n_layers - 1} of the {m.n_layers} layers")
    cfg = config_lib.config_from_json(config_lib.to_json(loaded.cfg))  # a copy
    cfg.name, cfg.model.n_layers = f"{cfg.name}-first{n_layers}", n_layers
    try:
        cfg = config_lib.resolve(cfg)
        config_lib.validate(cfg)
    except config_lib.ConfigError as e:
        raise UserError(f"--layers {n_layers}: {e}") from e
    model = build_model(cfg.model)
    params = first_layers(loaded.params, abstract_params(model, cfg.model.seq_len))
    os.makedirs(out, exist_ok=True)
    checkpoint.save_params(out, params)
    copied = []
    for name in sorted(os.listdir(workdir)):
        if name in TOKENIZER_FILES or name.endswith(".tiktoken"):
            with atomic_path(os.path.join(out, name)) as tmp:
                shutil.copyfile(os.path.join(workdir, name), tmp)
            copied.append(name)
    copied += copy_tokenizer_extras(workdir, out)  # which token is EOS, the chat template
    atomic_write(os.path.join(out, "config.json"), config_lib.to_json(cfg))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    return {"out": out, "source": workdir, "layers": n_layers, "of_layers": m.n_layers, "params": int(n_params),
            "source_params": int(sum(x.size for x in jax.tree.leaves(loaded.params))), "tokenizer": copied}
