"""`llm-jax prune --workdir W --out P --method magnitude|nm|heads|neurons|layers ...`: a pruned work directory.

Unstructured (`magnitude --sparsity S`, `nm --n N --m M`): the layer projections' weights zeroed and a 0/1
`kernel_mask` beside each kernel (model.prune_masks), so that `llm-jax train --config P/config.json
--config.checkpoint.restore_from=P ...` (recovery fine-tuning) keeps them zero. Structured (`heads --fraction F`,
`neurons --fraction F`, `layers --count C`; `structured.py`): a smaller dense model (fewer heads, a narrower FFN,
fewer layers). Either loads in `generate`, `eval`, `train` and `convert to-hf` as any other work directory
(docs/pruning.md).
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np

from llm_jax import argtypes
from llm_jax.errors import UserError
from llm_jax.prune import structured
from llm_jax.prune.methods import METHODS as UNSTRUCTURED
from llm_jax.prune.methods import mask_for

METHODS = UNSTRUCTURED + structured.METHODS


class PruneError(UserError):
    """The request cannot be pruned as asked."""


def _kernels(tree: dict, path: tuple = ()):
    """(path, dict holding `kernel`) of every projection in the scanned layer stack."""
    for key, value in tree.items():
        if isinstance(value, dict):
            if "kernel" in value and path and path[0] == "layers":
                yield path + (key,), value
            else:
                yield from _kernels(value, path + (key,))


def prune_params(params: dict, method: str, sparsity: float, n: int, m: int, n_in_of) -> tuple[dict, dict]:
    """(pruned parameter tree with kernel_mask leaves, {projection: kept share}); `n_in_of(path)` is the number of
    input axes of a projection's kernel (after the stacked layer axis)."""
    out = _copy(params)
    kept = {}
    for path, dense in _kernels(out):
        kernel = np.asarray(dense["kernel"])
        n_in = n_in_of(path)
        L, ins, outs = kernel.shape[0], kernel.shape[1:1 + n_in], kernel.shape[1 + n_in:]
        w_LIO = kernel.reshape(L, math.prod(ins), math.prod(outs))
        try:
            masks = np.stack([mask_for(method, w, sparsity, n, m) for w in w_LIO]).reshape(kernel.shape)
        except ValueError as e:
            raise PruneError(f"{'/'.join(path)}: {e}") from None
        dense["kernel"] = (kernel * masks).astype(kernel.dtype)
        dense["kernel_mask"] = masks
        kept["/".join(path)] = float(masks.mean())
    return out, kept


def _copy(tree):
    return {k: _copy(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def prune_workdir(workdir: str, out: str, method: str, sparsity: float = 0.5, n: int = 2, m: int = 4,
                  fraction: float = 0.25, count: int = 1, log=None) -> dict:
    """Writes the pruned work directory `out` of `workdir`; returns what `--json` prints. (JAX and the loaders are
    imported here, not at the top: the command-line parser imports this module and must start fast.)"""
    import jax

    from llm_jax import checkpoint
    from llm_jax import config as config_lib
    from llm_jax.fileio import atomic_write, check_new_output
    from llm_jax.infer.export import save_tokenizer
    from llm_jax.infer.load import load_workdir
    if method not in METHODS:
        raise PruneError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "magnitude" and not 0 < sparsity < 1:
        raise PruneError(f"--sparsity {sparsity}: must be in (0, 1)")
    if method == "nm" and not 0 < n < m:
        raise PruneError(f"--n {n} --m {m}: N:M keeps n of every m weights, 0 < n < m")
    check_new_output(out, flag="--out", error=PruneError)
    loaded = load_workdir(workdir)
    model_cfg = loaded.cfg.model
    if model_cfg.prune_masks or model_cfg.weight_quant != "none" or model_cfg.peft != "none" or model_cfg.moe_experts:
        raise PruneError(f"{workdir}: prune a dense, unquantized model without adapters or masks (merge LoRA "
                         f"first: llm-jax export --merge-lora)")
    cfg = config_lib.config_from_json(config_lib.to_json(loaded.cfg))
    dense = jax.device_get(loaded.params)
    if method in structured.METHODS:
        if model_cfg.local_global_pattern and model_cfg.attention_window:
            raise PruneError("structured pruning needs one block per scanned layer (no local/global pattern)")
        try:
            params, changed = structured.prune_structured(dense, dict(model_cfg), method, fraction, count)
        except ValueError as e:
            raise PruneError(str(e)) from None
        cfg.model.update(changed)
    else:
        n_in_of = lambda path: 2 if path[-1] == "out" else 1  # noqa: E731  (attention out: heads x head_dim)
        params, kept = prune_params(dense, method, sparsity, n, m, n_in_of)
        cfg.model.prune_masks = True
    try:
        config_lib.validate(cfg)
    except config_lib.ConfigError as e:
        raise PruneError(f"the pruned model's config is invalid: {e}") from None
    os.makedirs(out, exist_ok=True)
    checkpoint.save_params(out, params, loaded.step)
    save_tokenizer(loaded.tokenizer, out, workdir)
    atomic_write(os.path.join(out, "config.json"), config_lib.to_json(cfg))
    if method in structured.METHODS:
        size = lambda tree: sum(int(np.size(x)) for x in jax.tree.leaves(tree))  # noqa: E731
        return {"out": out, "method": method, "params": size(params), "params_before": size(dense),
                "changed": changed, "step": loaded.step}
    total = sum(np.asarray(d["kernel_mask"]).size for _, d in _kernels(params))
    zeros = sum(int((np.asarray(d["kernel_mask"]) == 0).sum()) for _, d in _kernels(params))
    return {"out": out, "method": method, "sparsity": zeros / total, "pruned_weights": zeros,
            "projection_weights": total, "kept_by_projection": kept, "step": loaded.step}


def cmd_prune(args, extra) -> int:
    info = prune_workdir(args.workdir, args.out, args.method, args.sparsity, args.n, args.m, args.fraction,
                         args.count)
    if args.json:
        print(json.dumps(info, sort_keys=True))
    elif "changed" in info:
        print(f"{args.method}: {info['params_before']:,} -> {info['params']:,} parameters "
              f"({', '.join(f'{k}={v}' for k, v in info['changed'].items())}) -> {info['out']}")
    else:
        print(f"pruned {info['pruned_weights']:,} of {info['projection_weights']:,} projection weights "
              f"({100 * info['sparsity']:.1f}%, {args.method}) -> {info['out']}", file=sys.stdout)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="magnitude / N:M pruning with masks kept in training; heads / neurons / layers: "
                                     "a smaller dense model")
    p.add_argument("--workdir", required=True, help="a dense float work directory (trained or converted)")
    p.add_argument("--out", required=True, help="the new, pruned work directory")
    p.add_argument("--method", required=True, choices=METHODS,
                   help="magnitude: the smallest weights of each matrix; nm: n of every m consecutive inputs; heads, "
                        "neurons: the least important per layer; layers: the least important layers")
    p.add_argument("--sparsity", type=argtypes.fraction_open, default=0.5, help="magnitude: the share pruned")
    p.add_argument("--n", type=argtypes.positive_int, default=2, help="nm: weights kept per group")
    p.add_argument("--m", type=argtypes.positive_int, default=4, help="nm: group size (consecutive inputs)")
    p.add_argument("--fraction", type=argtypes.fraction_open, default=0.25,
                   help="heads, neurons: the share removed from every layer")
    p.add_argument("--count", type=argtypes.positive_int, default=1, help="layers: how many are removed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prune, overrides=False, parser=p)
