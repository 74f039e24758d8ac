"""`llm-jax quantize --workdir W --out Q --method int8|int4|nf4|gptq [--group-size G]`: a work directory whose
projection weights are stored quantized, which `generate`, `eval perplexity` and `bench generate` load as any
other (its config.json says model.weight_quant and model.quant_group_size; the model dequantizes per matmul).

What is quantized: every projection kernel (attention query/key/value/out, the feed-forward layers, an untied
output head) in the method's format, and the token embedding (the tied output head) as int8 rows for every
method. Norm scales and biases stay float. `gptq` writes int4 (model.weight_quant=int4) with codes chosen by GPTQ
on calibration text (`gptq.py`); the others round to nearest.

`--out` is checked before anything is loaded; config.json is written last, so an `--out` with one is complete.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

from llm_jax import argtypes
from llm_jax.errors import UserError

# formats.METHODS + gptq (a test keeps them equal); the command's parser imports nothing heavy
METHODS = ("int8", "int4", "nf4", "gptq")
CALIBRATION_MAX_CHARS = 2_000_000  # of the calibration text tokenized (windows are drawn from these)


class QuantizeError(UserError):
    """The request cannot be quantized as asked."""


def add_parser(sub) -> None:
    q = sub.add_parser("quantize", help="weight-only quantization of a work directory (int8, int4, nf4, gptq)")
    q.add_argument("--workdir", required=True, help="a float work directory (trained or converted)")
    q.add_argument("--out", required=True, help="the new, quantized work directory")
    q.add_argument("--method", required=True, choices=METHODS,
                   help="int8: per-channel absmax; int4: group-wise round-to-nearest; nf4: group-wise NormalFloat4; "
                        "gptq: int4 codes chosen by GPTQ on calibration text")
    q.add_argument("--group-size", type=argtypes.positive_int, default=64,
                   help="int4/nf4/gptq: inputs sharing a scale (must divide every projection's inputs)")
    q.add_argument("--calibration", default="shakespeare",
                   help="gptq: calibration text: a text file, a directory of .txt/.md files, or 'shakespeare'")
    q.add_argument("--calibration-samples", type=argtypes.positive_int, default=32,
                   help="gptq: random windows of the calibration text")
    q.add_argument("--calibration-len", type=argtypes.positive_int, default=512,
                   help="gptq: tokens per window (at most model.seq_len)")
    q.add_argument("--act-order", action="store_true", help="gptq: quantize inputs in descending activation order")
    q.add_argument("--damp", type=argtypes.fraction_open, default=0.01,
                   help="gptq: damping added to the Hessian's diagonal, as a fraction of its mean")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_quantize)


def cmd_quantize(args, extra) -> int:
    info = quantize_workdir(args.workdir, args.out, args.method, args.group_size, calibration=args.calibration,
                            samples=args.calibration_samples, length=args.calibration_len,
                            act_order=args.act_order, damp=args.damp)
    if args.json:
        print(json.dumps(info, sort_keys=True))
    else:
        print(f"quantized {args.workdir} ({info['method']}) -> {info['out']}: checkpoint {info['bytes_before']:,} "
              f"-> {info['bytes_after']:,} bytes ({info['ratio']:.3f}x) in {info['seconds']:.1f} s")
    return 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def _checkpoint_bytes(workdir: str, step: int) -> int:
    """Bytes on disk of `workdir`'s checkpoint `step` (the step directory orbax writes)."""
    from llm_jax import checkpoint
    step_dir = os.path.join(checkpoint.checkpoint_dir(workdir), str(step))
    return dir_bytes(step_dir if os.path.isdir(step_dir) else checkpoint.checkpoint_dir(workdir))


def quantized_config(cfg, method: str, group_size: int):
    """The float run's config with model.weight_quant set (gptq stores int4), checked by the schema's rules."""
    from llm_jax import config as config_lib
    qcfg = cfg.copy_and_resolve_references()
    qcfg.model.weight_quant = "int4" if method == "gptq" else method
    qcfg.model.quant_group_size = group_size
    qcfg.name = f"{cfg.name}-{method}"
    try:
        config_lib.validate(qcfg)
    except config_lib.ConfigError as e:
        raise QuantizeError(f"cannot quantize with --method {method} --group-size {group_size}: {e}") from e
    return qcfg


def calibration_tokens(tokenizer, source: str, samples: int, length: int, seed: int = 0) -> np.ndarray:
    """(samples, length) token windows at random offsets of the calibration text (its first 2M characters)."""
    from llm_jax.data.corpus import load_documents
    text = "\n\n".join(load_documents(source))[:CALIBRATION_MAX_CHARS]
    ids = np.asarray(tokenizer.encode(text), np.int32)
    if ids.size < length + samples:
        raise QuantizeError(f"--calibration {source}: {ids.size} tokens are too few for {samples} windows of "
                            f"{length} tokens; give more text or ask for fewer/shorter windows")
    starts = np.sort(np.random.default_rng(seed).choice(ids.size - length, samples, replace=False))
    return np.stack([ids[s:s + length] for s in starts])


def _dense_kernels(tree: dict, path: tuple = ()):
    """(path, subtree) of every Dense's parameters (a dict holding `kernel`)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            if "kernel" in value:
                yield path + (key,), value
            else:
                yield from _dense_kernels(value, path + (key,))


def _get(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def quantize_params(params: dict, target: dict, method: str, group: int, grams: dict | None = None,
                    act_order: bool = False, damp: float = 0.01, log=_stderr) -> dict:
    """The quantized parameter tree (shaped like `target`, the quantized model's abstract parameters) of a float
    tree. With `grams` (method gptq) the projections get GPTQ codes, else round-to-nearest in `method`."""
    import jax

    from llm_jax.models import quant_formats as formats
    from llm_jax.quant import gptq
    fmt = "int4" if method == "gptq" else method
    out = jax.tree.map(lambda x: x, params)  # a copy of the nesting; leaves are replaced below
    embed = out["embed"].pop("embedding")
    parts = formats.quantize("int8", embed.T)  # logits = x . E^T: one scale per token row
    out["embed"].update(embedding_q=np.asarray(parts["q"]).T, embedding_scale=np.asarray(parts["scale"]))
    for path, dense in _dense_kernels(out):
        kernel = dense.pop("kernel")
        codes = _get(target, path)["kernel_q"]
        lead = 1 if path[0] == "layers" else 0             # the scanned stack: (layers, ...)
        n_features = codes.ndim - lead - 1
        in_shape = kernel.shape[lead:kernel.ndim - n_features]
        features = kernel.shape[kernel.ndim - n_features:]
        stack_LIF = np.asarray(kernel, np.float32).reshape((-1 if lead else 1, math.prod(in_shape)) + features)
        if grams is None:
            layers = [formats.quantize(fmt, w, group) for w in stack_LIF]
        else:
            gram_LII = grams[path].reshape((-1,) + grams[path].shape[-2:])
            layers = []
            for i, (w_IF, gram_II) in enumerate(zip(stack_LIF, gram_LII)):
                w_IO = w_IF.reshape(w_IF.shape[0], -1)
                parts, w_hat_IO = gptq.gptq_int4(w_IO, gram_II, group, damp=damp, act_order=act_order)
                rtn_IO = np.asarray(formats.dequantize("int4", formats.quantize("int4", w_IO, group)))
                log(f"gptq {'/'.join(path)} layer {i}: output error {gptq.output_error(w_IO, w_hat_IO, gram_II):.4g} "
                    f"(round-to-nearest {gptq.output_error(w_IO, rtn_IO, gram_II):.4g})")
                layers.append({k: v.reshape(v.shape[:1] + features) for k, v in parts.items()})
        for part in formats.PARTS[fmt]:
            stacked = np.stack([np.asarray(layer[part]) for layer in layers])
            dense[f"kernel_{part}"] = stacked if lead else stacked[0]
    wanted = jax.tree.map(lambda x: (x.shape, x.dtype), target)
    got = jax.tree.map(lambda x: (np.shape(x), np.asarray(x).dtype), out)
    assert got == wanted, f"quantized parameters do not match the quantized model: {got} != {wanted}"
    return out


def quantize_workdir(workdir: str, out: str, method: str, group_size: int = 64, *, calibration: str = "shakespeare",
                     samples: int = 32, length: int = 512, act_order: bool = False, damp: float = 0.01,
                     log=_stderr) -> dict:
    """Writes the quantized work directory `out` of `workdir`; returns what `--json` prints."""
    import jax
    import jax.numpy as jnp

    from llm_jax import checkpoint
    from llm_jax import config as config_lib
    from llm_jax.fileio import atomic_write, check_new_output
    from llm_jax.infer.export import save_tokenizer
    from llm_jax.infer.load import abstract_params, load_workdir, read_config
    from llm_jax.models import build_model
    from llm_jax.quant import gptq
    start = time.perf_counter()
    if method not in METHODS:
        raise QuantizeError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    check_new_output(out, flag="--out", error=QuantizeError)
    cfg = read_config(workdir)  # the request is checked before the parameters are read
    if cfg.model.weight_quant != "none":
        raise QuantizeError(f"{workdir!r} is already quantized (model.weight_quant={cfg.model.weight_quant!r}); "
                            f"quantize its float original instead")
    qcfg = quantized_config(cfg, method, group_size)
    loaded = load_workdir(workdir)
    m = loaded.cfg.model
    target = abstract_params(build_model(qcfg.model), qcfg.model.seq_len)
    grams = None
    if method == "gptq":
        length = min(length, m.seq_len)
        tokens = calibration_tokens(loaded.tokenizer, calibration, samples, length)
        log(f"gptq: calibration {samples} x {length} tokens of {calibration}")
        grams = gptq.input_grams(loaded.model, loaded.params, tokens, log=log)
    qparams = quantize_params(jax.device_get(loaded.params), target, method, group_size, grams, act_order, damp, log)
    os.makedirs(out, exist_ok=True)
    checkpoint.save_params(out, jax.tree.map(jnp.asarray, qparams), loaded.step)
    save_tokenizer(loaded.tokenizer, out, workdir)
    atomic_write(os.path.join(out, "config.json"), config_lib.to_json(qcfg))
    before, after = _checkpoint_bytes(workdir, loaded.step), _checkpoint_bytes(out, loaded.step)
    param_bytes = lambda tree: sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))  # noqa: E731
    info = {"method": method, "weight_quant": qcfg.model.weight_quant,
            "group_size": None if method == "int8" else group_size, "out": out,
            "step": loaded.step, "bytes_before": before, "bytes_after": after, "ratio": after / before,
            "param_bytes_before": param_bytes(loaded.params), "param_bytes_after": param_bytes(qparams),
            "seconds": time.perf_counter() - start}
    if method == "gptq":
        info.update(calibration=calibration, calibration_tokens=samples * length, act_order=act_order, damp=damp)
    return info
