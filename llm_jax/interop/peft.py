"""LoRA adapters <-> the Hugging Face PEFT format (`adapter_config.json` + `adapter_model.safetensors`).

Our adapters of a projection are `lora_a` (inputs x r) and `lora_b` (r x outputs), stacked over layers; PEFT's are
`...<module>.lora_A.weight` (r x in) and `...lora_B.weight` (out x r) per layer, named after the base model's
module (`base_model.model.model.layers.{i}.self_attn.q_proj`), with the same scaling lora_alpha / r. The module
names come from the Hugging Face conversion table (`interop/hf.py`), so export and import cannot drift from the
base model's conversion. Llama-architecture models (Llama, Mistral, SmolLM2) only: GPT-2 fuses Q, K and V into
one Conv1D that PEFT adapts as a whole.

`to_peft` (`llm-jax convert to-peft`) writes a LoRA work directory's adapters alone (the base stays where it
is); `read_peft` reads such a directory back as our adapters tree for a base model's parameters, and `from_peft`
(`llm-jax convert from-peft`) writes it as an adapters-only directory that `generate/serve --adapter` put on the
base work directory (what `llm-jax export --adapters-only` writes for a LoRA run trained here).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from llm_jax import checkpoint
from llm_jax import config as config_lib
from llm_jax.errors import UserError
from llm_jax.fileio import atomic_write, atomic_write_json, check_new_output, read_json
from llm_jax.infer.export import save_tokenizer
from llm_jax.infer.load import load_workdir
from llm_jax.interop import hf, safetensors_io
from llm_jax.models import peft as peft_params

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."


class PeftError(UserError):
    """An adapter export or import that cannot be done as asked."""


def _projections(family: str):
    """(our kernel's module path, HF module name with {i}, input axes) of every adaptable projection."""
    if family not in ("llama", "mistral"):
        raise PeftError(f"PEFT export/import supports Llama-architecture models (Llama, Mistral, SmolLM2), not "
                        f"{family!r}")
    return [(path.removesuffix("/kernel"), name.removesuffix(".weight"), n_in)
            for path, name, layout, n_in in hf.TABLES[family] if layout == "linear" and path.startswith("layers/")]


def _node(tree: dict, path: str):
    for key in path.split("/"):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def adapters_to_peft(adapters: dict, m) -> tuple[dict, list[str]]:
    """(PEFT tensors, target module names) of our adapters tree (`peft_params.split(params)[1]`)."""
    tensors, targets = {}, set()
    for path, name, _ in _projections(hf.family_of(m)):
        node = _node(adapters, path)
        if not node:
            continue
        a, b = np.asarray(node["lora_a"], np.float32), np.asarray(node["lora_b"], np.float32)
        targets.add(name.rsplit(".", 1)[1])
        for i in range(m["n_layers"]):
            module = PREFIX + name.format(i=i)
            tensors[f"{module}.lora_A.weight"] = np.ascontiguousarray(a[i].T)                       # (r, in)
            tensors[f"{module}.lora_B.weight"] = np.ascontiguousarray(b[i].reshape(b.shape[1], -1).T)  # (out, r)
    if not tensors:
        raise PeftError("the work directory has no LoRA adapters on the projections PEFT knows")
    return tensors, sorted(targets)


def peft_config(m, targets: list[str], base: str = "") -> dict:
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": m["lora_rank"], "lora_alpha": m["lora_alpha"],
            "lora_dropout": m["lora_dropout"], "target_modules": targets, "bias": "none", "fan_in_fan_out": False,
            "use_rslora": False, "inference_mode": True, "base_model_name_or_path": base, "modules_to_save": None}


def to_peft(workdir: str, out: str, base: str = "") -> dict:
    """Writes the adapters of LoRA work directory `workdir` to `out` in the PEFT format."""
    check_new_output(out, flag="--out", error=PeftError)
    loaded = load_workdir(workdir)
    m = dict(loaded.cfg.model)
    if m["peft"] != "lora":
        raise PeftError(f"{workdir} has no LoRA adapters (model.peft={m['peft']!r})")
    tensors, targets = adapters_to_peft(peft_params.split(jax.device_get(loaded.params))[1], m)
    os.makedirs(out, exist_ok=True)
    safetensors_io.write_file(os.path.join(out, WEIGHTS_FILE), tensors)
    atomic_write_json(os.path.join(out, CONFIG_FILE), peft_config(m, targets, base), indent=2)
    return {"out": out, "targets": targets, "rank": m["lora_rank"], "tensors": len(tensors), "step": loaded.step}


def read_peft(directory: str, base_params: dict, m) -> tuple[dict, dict]:
    """(adapters tree, model fields: peft, lora_rank, lora_alpha, lora_targets) of a PEFT LoRA directory for the
    base model `base_params` of fields `m`; every mismatch is one PeftError naming the directory."""
    config = read_json(os.path.join(directory, CONFIG_FILE), "PEFT adapter config")
    unsupported = [key for key in ("use_rslora", "fan_in_fan_out", "use_dora", "alpha_pattern", "rank_pattern",
                                   "modules_to_save") if config.get(key)]
    if config.get("peft_type") != "LORA" or unsupported or config.get("bias", "none") != "none":
        raise PeftError(f"{directory}: only plain LoRA adapters are read (peft_type LORA, bias 'none'; not "
                        f"{', '.join(unsupported) or 'bias ' + repr(config.get('bias'))})")
    if not isinstance(config.get("r"), int) or not isinstance(config.get("lora_alpha"), (int, float)):
        raise PeftError(f"{directory}: {CONFIG_FILE} needs an integer 'r' and a number 'lora_alpha'")
    if m["weight_quant"] != "none":
        raise PeftError(f"{directory}: the base model stores quantized weights (model.weight_quant="
                        f"{m['weight_quant']!r}); read the adapters onto the float base model")
    tensors = safetensors_io.read_file(os.path.join(directory, WEIGHTS_FILE))
    r, adapters, found, used = config["r"], {}, set(), set()
    for path, name, n_in in _projections(hf.family_of(m)):
        names = [(f"{PREFIX}{name.format(i=i)}.lora_A.weight", f"{PREFIX}{name.format(i=i)}.lora_B.weight")
                 for i in range(m["n_layers"])]
        used.update(n for pair in names for n in pair)
        layers = [(tensors.get(a_name), tensors.get(b_name)) for a_name, b_name in names]
        if all(a is None for a, _ in layers):
            continue
        kernel = _node(base_params, path + "/kernel")
        features = tuple(kernel.shape[1 + n_in:])
        ins = int(np.prod(kernel.shape[1:1 + n_in]))
        if any(a is None or b is None or a.shape != (r, ins) or b.shape != (int(np.prod(features)), r)
               for a, b in layers):
            raise PeftError(f"{directory}: {name} needs rank-{r} lora_A ({r}, {ins}) and lora_B "
                            f"({int(np.prod(features))}, {r}) tensors for all {m['n_layers']} layers")
        found.add(path.rsplit("/", 1)[1])
        node = adapters
        for key in path.split("/"):
            node = node.setdefault(key, {})
        node["lora_a"] = np.stack([a.T for a, _ in layers]).astype(np.float32)
        node["lora_b"] = np.stack([b.T.reshape((r,) + features) for _, b in layers]).astype(np.float32)
    if not found:
        raise PeftError(f"{directory}: no adapter tensor names a module of this {hf.family_of(m)} model")
    unread = sorted(set(tensors) - used)
    if unread:
        raise PeftError(f"{directory}: {len(unread)} tensor(s) adapt modules this reader does not (e.g. "
                        f"{unread[0]}): only the layers' attention and MLP projections are read")
    fields = {"peft": "lora", "lora_rank": r, "lora_alpha": float(config["lora_alpha"]),
              "lora_targets": rf"(attention|mlp)/({'|'.join(sorted(found))})$"}
    return adapters, fields


def from_peft(workdir: str, directory: str, out: str) -> dict:
    """Writes the PEFT LoRA `directory` (adapters for base work directory `workdir`) to `out` as an adapters-only
    directory: config.json (the base's, with the adapters' model.peft / lora_* fields), the adapters' checkpoint
    and the base's tokenizer."""
    check_new_output(out, flag="--out", error=PeftError)
    loaded = load_workdir(workdir)
    adapters, fields = read_peft(directory, jax.device_get(loaded.params), dict(loaded.cfg.model))
    cfg = config_lib.config_from_json(config_lib.to_json(loaded.cfg))
    cfg.model.update(fields)
    config_lib.validate(cfg)
    os.makedirs(out, exist_ok=True)
    checkpoint.save_params(out, adapters, 0)
    save_tokenizer(loaded.tokenizer, out, workdir)
    atomic_write(os.path.join(out, "config.json"), config_lib.to_json(cfg))
    return {"out": out, "rank": fields["lora_rank"], "alpha": fields["lora_alpha"], "targets": fields["lora_targets"]}
