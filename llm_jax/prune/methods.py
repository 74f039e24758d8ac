"""Which weights a pruning method keeps, as 0/1 masks over one layer's (inputs x outputs) kernel matrix.

| method      | keeps                                                                                   |
|-------------|-----------------------------------------------------------------------------------------|
| `magnitude` | the (1 - sparsity) share of the matrix's weights largest in absolute value (per matrix) |
| `nm`        | in every group of m consecutive inputs of each output, the n largest (2:4 by default:   |
|             | the pattern sparse tensor cores run)                                                    |

Masks are computed per layer and per projection (attention query/key/value/out, the feed-forward layers).
"""

from __future__ import annotations

import numpy as np

METHODS = ("magnitude", "nm")


def magnitude_mask(w_IO: np.ndarray, sparsity: float) -> np.ndarray:
    """1 where |w| is among the largest (1 - sparsity) * size entries (ties broken by position), else 0."""
    flat = np.abs(w_IO).reshape(-1)
    n_pruned = int(round(sparsity * flat.size))
    mask = np.ones(flat.size, np.int8)
    mask[np.argsort(flat, kind="stable")[:n_pruned]] = 0
    return mask.reshape(w_IO.shape)


def nm_mask(w_IO: np.ndarray, n: int, m: int) -> np.ndarray:
    """1 on the n largest |w| of every group of m consecutive inputs, per output column."""
    n_in, n_out = w_IO.shape
    if n_in % m:
        raise ValueError(f"N:M pruning needs the inputs ({n_in}) to be a multiple of m={m}")
    groups_GMO = np.abs(w_IO).reshape(n_in // m, m, n_out)
    order_GMO = np.argsort(-groups_GMO, axis=1, kind="stable")
    mask_GMO = np.zeros(groups_GMO.shape, np.int8)
    np.put_along_axis(mask_GMO, order_GMO[:, :n], 1, axis=1)
    return mask_GMO.reshape(n_in, n_out)


def mask_for(method: str, w_IO: np.ndarray, sparsity: float = 0.5, n: int = 2, m: int = 4) -> np.ndarray:
    if method == "magnitude":
        return magnitude_mask(w_IO, sparsity)
    if method == "nm":
        return nm_mask(w_IO, n, m)
    raise ValueError(f"unknown pruning method {method!r}; choose from {', '.join(METHODS)}")
