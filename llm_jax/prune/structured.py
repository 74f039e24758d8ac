"""Structured pruning: whole attention heads, FFN neurons or layers, exported as a smaller dense model.

Every layer of the scanned stack must keep the same shapes, so heads and neurons are pruned in the same number in
every layer (each layer drops its own least important ones):

- `heads --fraction F`: round(F * K) K/V heads per layer, each with its H/K query heads (MHA: query heads);
  importance = the squared norm of the group's query, key, value and output weights.
- `neurons --fraction F`: round(F * d_ff) feed-forward neurons per layer; importance = the norm of the neuron's
  input weights (gate and up) times the norm of its output row.
- `layers --count C`: C whole layers (pre-LN only: a removed block is the identity); importance = the squared norm
  of the block's two output projections (what it adds to the residual stream).

What the smaller model computes equals the original model with the removed parts' output weights zeroed (their
contribution removed): tests check exactly that. Importance here is weight magnitude, from the checkpoint alone.
"""

from __future__ import annotations

import numpy as np

METHODS = ("heads", "neurons", "layers")


def _sq(x, axes) -> np.ndarray:
    return np.sum(np.square(np.asarray(x, np.float64)), axis=axes)


def keep_heads(params: dict, m, fraction: float) -> np.ndarray:
    """(layers, K') the K/V head indices each layer keeps, in order."""
    att = params["layers"]["attention"]
    K, H = m["n_kv_heads"], m["n_heads"]
    G = H // K
    q = att["query"]["kernel"]             # (L, D, H, d)
    L = q.shape[0]
    score = (_sq(q.reshape(L, q.shape[1], K, G, -1), (1, 3, 4)) + _sq(att["key"]["kernel"], (1, 3))
             + _sq(att["value"]["kernel"], (1, 3))
             + _sq(att["out"]["kernel"].reshape(L, K, G, -1, att["out"]["kernel"].shape[-1]), (2, 3, 4)))
    n_drop = int(round(fraction * K))
    if not 0 < n_drop < K:
        raise ValueError(f"--fraction {fraction} of {K} K/V heads removes {n_drop}: remove at least one, keep one")
    return np.sort(np.argsort(-score, axis=1, kind="stable")[:, :K - n_drop], axis=1)


def keep_neurons(params: dict, m, fraction: float) -> np.ndarray:
    """(layers, F') the feed-forward neurons each layer keeps, in order."""
    mlp = params["layers"]["mlp"]
    ins = [mlp[k]["kernel"] for k in ("wi", "wi_gate", "wi_up") if k in mlp]   # (L, D, F) each
    score = np.sqrt(sum(_sq(w, 1) for w in ins)) * np.sqrt(_sq(mlp["wo"]["kernel"], 2))
    F = score.shape[1]
    n_drop = int(round(fraction * F))
    if not 0 < n_drop < F:
        raise ValueError(f"--fraction {fraction} of {F} neurons removes {n_drop}: remove at least one, keep one")
    return np.sort(np.argsort(-score, axis=1, kind="stable")[:, :F - n_drop], axis=1)


def keep_layers(params: dict, m, count: int) -> np.ndarray:
    """The layer indices kept (all but the `count` whose output projections are smallest)."""
    if m["norm_position"] != "pre":
        raise ValueError("--method layers needs a pre-LN model (a post-LN block is not the identity without its "
                         "sublayers)")
    layers = params["layers"]
    score = _sq(layers["attention"]["out"]["kernel"], (1, 2, 3)) + _sq(layers["mlp"]["wo"]["kernel"], (1, 2))
    L = score.shape[0]
    if not 0 < count < L:
        raise ValueError(f"--count {count}: remove at least one of the {L} layers and keep one")
    return np.sort(np.argsort(-score, kind="stable")[:L - count])


def _take(x, index_L_k, axis: int):
    """Per layer l, x[l] indexed by index_L_k[l] along `axis` (counted without the layer axis)."""
    return np.stack([np.take(np.asarray(x[i]), idx, axis=axis) for i, idx in enumerate(index_L_k)])


def prune_structured(params: dict, m: dict, method: str, fraction: float = 0.25, count: int = 1) -> tuple[dict, dict]:
    """(smaller parameter tree, the model fields that change) for `method`."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
    layers = {k: {kk: dict(vv) if isinstance(vv, dict) else vv for kk, vv in v.items()} if isinstance(v, dict) else v
              for k, v in params["layers"].items()}
    out["layers"] = layers
    if method == "layers":
        kept = keep_layers(params, m, count)
        out["layers"] = _map(params["layers"], lambda x: np.asarray(x)[kept])
        return out, {"n_layers": len(kept)}
    if method == "neurons":
        kept = keep_neurons(params, m, fraction)
        mlp = layers["mlp"]
        for name in ("wi", "wi_gate", "wi_up"):
            if name in mlp:
                mlp[name] = dict(mlp[name], kernel=_take(mlp[name]["kernel"], kept, 1))
                if "bias" in mlp[name]:
                    mlp[name]["bias"] = _take(mlp[name]["bias"], kept, 0)
        mlp["wo"] = dict(mlp["wo"], kernel=_take(mlp["wo"]["kernel"], kept, 0))
        return out, {"d_ff": kept.shape[1]}
    if method == "heads":
        kept_kv = keep_heads(params, m, fraction)
        G = m["n_heads"] // m["n_kv_heads"]
        kept_q = (kept_kv[:, :, None] * G + np.arange(G)).reshape(kept_kv.shape[0], -1)
        att = layers["attention"]
        for name, kept in (("query", kept_q), ("key", kept_kv), ("value", kept_kv)):
            att[name] = dict(att[name], kernel=_take(att[name]["kernel"], kept, 1))
            if "bias" in att[name]:
                att[name]["bias"] = _take(att[name]["bias"], kept, 0)
        att["out"] = dict(att["out"], kernel=_take(att["out"]["kernel"], kept_q, 0))
        return out, {"n_heads": kept_q.shape[1], "n_kv_heads": kept_kv.shape[1]}
    raise ValueError(f"unknown structured method {method!r}; choose from {', '.join(METHODS)}")


def _map(tree, fn):
    return {k: _map(v, fn) for k, v in tree.items()} if isinstance(tree, dict) else fn(tree)
