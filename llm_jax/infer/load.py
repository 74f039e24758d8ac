"""Loads a work directory (config.json + tokenizer + latest checkpoint) for sampling and evaluation.

Every way a work directory can be unusable is one `WorkdirError` naming it and the problem: no, an empty, a
truncated or a hand-broken config.json, no tokenizer, no checkpoint, or a checkpoint of another model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp

from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.data.tokenizers import TokenizerError, load_tokenizer
from llm_jax.errors import LlmJaxError, StorageError, UserError, one_line
from llm_jax.fileio import read_json
from llm_jax.models import build_model, peft
from llm_jax.models.transformer import Transformer
from llm_jax.parallel.mesh import logical_shardings, make_mesh, rules_tuple, unboxed


class WorkdirError(UserError):
    """The work directory is missing something a command needs."""


@dataclasses.dataclass
class LoadedModel:
    cfg: object
    model: Transformer
    params: dict
    tokenizer: object
    step: int
    mesh: object = None   # with load_workdir(..., devices=N): the mesh the parameters are laid out over


def abstract_params(model: Transformer, seq_len: int, device=None, mesh=None, rules=None):
    """Shapes and shardings to restore parameters into: one device, or with `mesh` laid out by the logical
    `rules` (the training layout: a model too big for one device is split over the mesh)."""
    boxed = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, seq_len), jnp.int32))["params"], jax.random.key(0))
    shapes = unboxed(boxed)
    if mesh is not None:
        shardings = logical_shardings(boxed, mesh, rules)
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
    sharding = jax.sharding.SingleDeviceSharding(device or jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def read_config(workdir: str):
    """The resolved, validated config of a work directory, or one WorkdirError naming its config.json."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise WorkdirError(f"{workdir!r} is not a work directory: it has no config.json")
    try:
        raw = read_json(path, "config")
    except StorageError:
        raise
    except UserError as e:
        raise WorkdirError(str(e)) from e
    try:
        cfg = config_lib.config_from_json(json.dumps(raw))
        config_lib.validate(cfg)
    except config_lib.ConfigError as e:
        raise WorkdirError(f"config {path}: {e}") from e
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # a value of the wrong kind for its key
        raise WorkdirError(f"config {path} does not describe a run: {one_line(e)}") from e
    return cfg


def load_workdir(workdir: str, step: int | None = None, log=None, devices=None) -> LoadedModel:
    """Config, model, parameters and tokenizer of a trained or converted work directory. The parameters go on
    one device, or with `devices` (a list) onto a mesh of them laid out by the run's mesh.* axes and rules
    (decode under `mesh.activate(loaded.mesh, rules)`; `infer/decode.py` then shards the cache alike).
    Damaged newer checkpoints are skipped with a warning through `log` (default: standard error)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    cfg = read_config(workdir)
    model = build_model(cfg.model)
    mesh = make_mesh(cfg, devices) if devices is not None else None
    if not os.path.isdir(checkpoint.checkpoint_dir(workdir)):
        raise WorkdirError(f"{workdir!r} has no checkpoints/ directory: train or convert a model into it first")
    try:
        tokenizer = load_tokenizer(workdir)
    except TokenizerError as e:
        raise WorkdirError(str(e)) from e  # it names the directory or the file
    try:
        target = abstract_params(model, cfg.model.seq_len, mesh=mesh, rules=rules_tuple(cfg) if mesh else None)
        params, step = checkpoint.restore_params(workdir, target, step, log)
    except FileNotFoundError as e:
        raise WorkdirError(str(e)) from e
    except UserError as e:  # no such step, no intact checkpoint, a checkpoint of another model
        raise WorkdirError(str(e)) from e
    except LlmJaxError:  # storage trouble keeps its own exit status
        raise
    except Exception as e:  # noqa: BLE001 (orbax's errors are long tracebacks: one line names the cause)
        which = f"the checkpoint at step {step}" if step is not None else "its latest checkpoint"
        raise WorkdirError(f"{workdir!r}: cannot restore the parameters of {which} into the model config.json "
                           f"describes: {one_line(e)}") from e
    return LoadedModel(cfg, model, params, tokenizer, step, mesh)


def with_adapter(loaded: LoadedModel, adapter_dir: str, log=None) -> LoadedModel:
    """`loaded` with the PEFT parameters of `adapter_dir` (`llm-jax export --adapters-only` of a LoRA / prefix /
    adapter run) on its base parameters: the base arrays are shared, not copied, so several adapters can be held
    and switched between with the base loaded once. The adapter's run must have been fine-tuned from a model of
    the same shapes (checked leaf by leaf); its config (with model.peft) becomes the returned model's."""
    cfg = read_config(adapter_dir)
    if cfg.model.peft == "none":
        raise WorkdirError(f"--adapter {adapter_dir}: its config.json has model.peft='none' (not an adapter)")
    model = build_model(cfg.model)
    mesh = loaded.mesh
    target = abstract_params(model, cfg.model.seq_len, mesh=mesh, rules=rules_tuple(cfg) if mesh else None)
    base_target, adapter_target = peft.split(target)
    base, _ = peft.split(loaded.params)
    differences = checkpoint.tree_differences(_leaves(base), _leaves(base_target))
    if differences:
        raise WorkdirError(f"--adapter {adapter_dir} was trained on another base model: {'; '.join(differences)}")
    try:
        adapters, step = checkpoint.restore_params(adapter_dir, adapter_target, log=log)
    except UserError as e:
        raise WorkdirError(f"--adapter {adapter_dir}: {e}") from e
    return LoadedModel(cfg, model, peft.join(base, adapters), loaded.tokenizer, step, mesh)


def _leaves(tree) -> dict:
    return {"/".join(str(getattr(k, "key", k)) for k in path): x
            for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
