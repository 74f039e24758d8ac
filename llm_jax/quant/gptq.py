"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers"):
int4 codes for a projection chosen to keep its outputs on calibration inputs, not its weights, close.

For a projection y = x . W with inputs X (N, I) the layer-output error of a quantized W' is
||X W - X W'||^2 = sum over outputs o of d_o^T H d_o, with d = W - W' and H = X^T X (the "Hessian" 2 X^T X up to
the factor). GPTQ quantizes the inputs (rows of our W, columns of the paper's) one at a time and moves each one's
rounding error onto the inputs not yet quantized, in the direction H^-1 says compensates it best: with U the upper
Cholesky factor of H^-1 (H^-1 = U^T U), after input i is rounded, W[j] -= U[i, j] / U[i, i] * (W[i] - W'[i]) for
every j > i. The update is lazy: inside a block of columns it touches the block only, and the rest of W receives
the block's accumulated errors in one matrix product. Details as in the paper's reference implementation:
- damping: H + damp * mean(diag H) * Id before inverting (damp 0.01);
- an input that never fired (H_ii = 0) is set to 0 with H_ii = 1;
- groups: int4's per-group scale and offset (`formats`) are fitted, when a group's first input is reached, to
  the group's current (error-updated) weights; blocks are a multiple of the group size so a group lies in one;
- act-order (optional): inputs are processed in descending H_ii, the most active first. Groups then use scales
  fitted to the original weights beforehand ("static groups"), so the stored layout stays contiguous groups.

`input_grams` collects H for every Dense of a model in one forward pass per batch (a flax method interceptor
sows x^T x of each projection's input). Every layer's H comes from the float model's activations (the paper
feeds each layer the outputs of the already-quantized layers before it; one pass for all layers is cheaper).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from llm_jax.models.layers import Dense
from llm_jax.models import quant_formats as formats

GRAM = "input_gram"


# ------------------------------------------------------------------------------------ calibration statistics


def _sow_input_gram(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, Dense) and context.method_name == "__call__":
        x = args[0]
        x_NI = x.reshape(-1, math.prod(x.shape[x.ndim - module.n_in:])).astype(jnp.float32)
        module.sow("intermediates", GRAM, x_NI.T @ x_NI)
    return next_fun(*args, **kwargs)


@functools.partial(jax.jit, static_argnames=("model",))
def _batch_grams(model, params, tokens_BL):
    with nn.intercept_methods(_sow_input_gram):
        _, state = model.apply({"params": params}, tokens_BL, mutable=["intermediates"])
    return state["intermediates"]


def _collect(tree, path=()):
    """{path of a Dense: its sown Gram} from an intermediates tree (a sow stores a one-element tuple)."""
    out = {}
    for key, value in tree.items():
        if key == GRAM:
            out[path] = value[0]
        elif isinstance(value, dict):
            out.update(_collect(value, path + (key,)))
    return out


def input_grams(model, params, tokens_NL, batch: int = 8, log=None) -> dict:
    """{Dense path (e.g. ('layers', 'mlp', 'wo')): sum of x^T x over the calibration tokens (float64; stacked
    (layers, I, I) under the scanned layers)} for the float model."""
    total = {}
    for start in range(0, len(tokens_NL), batch):
        grams = _collect(_batch_grams(model, params, jnp.asarray(tokens_NL[start:start + batch])))
        for path, gram in grams.items():
            total[path] = total.get(path, 0.0) + np.asarray(gram, np.float64)
        if log:
            log(f"calibration: {min(start + batch, len(tokens_NL))}/{len(tokens_NL)} sequences")
    return total


# ---------------------------------------------------------------------------------------------- the method


def output_error(w_IO, w_hat_IO, gram_II) -> float:
    """||X W - X W'||^2 = sum_o d_o^T H d_o for d = W - W' (I, O) and H = X^T X."""
    d = np.asarray(w_IO, np.float64) - np.asarray(w_hat_IO, np.float64)
    return float(np.sum(d * (gram_II @ d)))


def _group_params(w_OG) -> tuple[np.ndarray, np.ndarray]:
    """int4 (scale, offset) per output channel of an (O, group) slice, by formats' rule."""
    scale, offset = formats.int4_group_params(jnp.asarray(w_OG.T, jnp.float32)[None])
    return np.asarray(scale[0], np.float64), np.asarray(offset[0], np.float64)


def _int4_codes(w, scale, offset) -> np.ndarray:
    """formats.int4_codes in numpy: the same rounding (half to even) without a device call per input."""
    return np.clip(np.round((w - offset) / scale), 0, formats.INT4_LEVELS).astype(np.uint8)


def gptq_int4(w_IO, gram_II, group: int, *, block: int = 128, damp: float = 0.01,
              act_order: bool = False) -> tuple[dict, np.ndarray]:
    """(int4 parts of `formats` for w_IO (I, O), the dequantized (I, O) matrix they store) by GPTQ with the
    inputs' Gram matrix gram_II = X^T X. `group` must divide I."""
    I, O = w_IO.shape
    W = np.array(w_IO, np.float64).T.copy()   # (O, I): the paper's layout, one column per input
    H = np.array(gram_II, np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    scale_GO, offset_GO = np.zeros((I // group, O)), np.zeros((I // group, O))
    perm = np.arange(I)
    if act_order:
        for g in range(I // group):  # static groups: fitted to the original weights
            scale_GO[g], offset_GO[g] = _group_params(W[:, g * group:(g + 1) * group])
        perm = np.argsort(-np.diag(H), kind="stable")
        W, H = W[:, perm], H[perm][:, perm]
    H[np.diag_indices(I)] += damp * np.mean(np.diag(H))
    Hinv = scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), np.eye(I))
    U = np.linalg.cholesky(Hinv).T            # upper: H^-1 = U^T U

    block = group * max(1, block // group)
    codes_OI = np.zeros((O, I), np.uint8)     # in processing order
    for i1 in range(0, I, block):
        i2 = min(i1 + block, I)
        W1, U1, err_OB = W[:, i1:i2].copy(), U[i1:i2, i1:i2], np.zeros((O, i2 - i1))
        for i in range(i2 - i1):
            g = perm[i1 + i] // group
            if not act_order and (i1 + i) % group == 0:
                scale_GO[g], offset_GO[g] = _group_params(W1[:, i:i + group])
            w = W1[:, i]
            q = _int4_codes(w, scale_GO[g], offset_GO[g])
            codes_OI[:, i1 + i] = q
            err = (w - (q * scale_GO[g] + offset_GO[g])) / U1[i, i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            err_OB[:, i] = err
        W[:, i2:] -= err_OB @ U[i1:i2, i2:]

    codes_IO = np.empty((I, O), np.uint8)
    codes_IO[perm] = codes_OI.T
    parts = {"q": np.asarray(formats.pack_int4(codes_IO)), "scale": scale_GO.astype(np.float32),
             "offset": offset_GO.astype(np.float32)}
    return parts, np.asarray(formats.dequantize("int4", parts))
