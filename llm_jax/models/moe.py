"""Mixture-of-experts feed-forward layer: a router sends each token to `top_k` of `n_experts` expert FFNs.

Two ways to move tokens to their experts, numerically the same when nothing overflows:
- dropless (`model.moe_capacity_factor=0`): the token-expert assignments are sorted by expert and each expert's
  contiguous run goes through its weights in one grouped matmul (`jax.lax.ragged_dot`). No token is dropped and
  no FLOPs are spent on padding. The sort is over the whole (global) batch, so under an `expert` mesh axis GSPMD
  gathers tokens rather than exchanging them: use it on one device or data/fsdp meshes.
- capacity (`moe_capacity_factor=c > 0`, GShard/Switch): every sequence may send each expert at most
  C = ceil(c * top_k * L / E) tokens; the rest of an expert's queue (first choices ahead of second choices) is
  dropped (the residual carries those tokens on). Tokens move with one-hot dispatch/combine einsums into an
  (experts, batch, capacity, embed) tensor whose expert axis is sharded over `expert`: GSPMD turns the reshard
  into the all-to-all of expert parallelism. c >= E / top_k leaves room for every token (equal to dropless).

Auxiliary losses go to the `losses` collection already weighted (the train step adds them): the Switch/GShard
load-balancing loss E * sum_i f_i * p_i (f_i the share of assignments routed to expert i, p_i its mean router
probability; 1.0 when perfectly balanced) and the ST-MoE router z-loss mean(logsumexp(logits)^2). Routing
statistics go to the `stats` collection (min/max expert share, dropped fraction) and are logged, not optimised.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models.config import ModelConfig
from llm_jax.models.layers import ACTIVATIONS, GATED, MLP, partitioned

STATS_COLLECTION = "stats"  # llm_jax.objectives.base reads it (models never import objectives)


def route(logits_TE, cfg: ModelConfig):
    """(top-k weights (T, k), top-k expert ids (T, k), router probabilities (T, E)) from float32 router logits."""
    if cfg.moe_router == "softmax":
        probs_TE = jax.nn.softmax(logits_TE, axis=-1)
    else:  # sigmoid (DeepSeek-V3): independent per-expert affinities
        probs_TE = jax.nn.sigmoid(logits_TE)
    weights_Tk, experts_Tk = jax.lax.top_k(probs_TE, cfg.moe_top_k)
    if cfg.moe_norm_topk:
        weights_Tk = weights_Tk / jnp.sum(weights_Tk, axis=-1, keepdims=True)
    return weights_Tk, experts_Tk, probs_TE


def balance_loss(probs_TE, experts_Tk, n_experts: int):
    """E * sum_i f_i * p_i: f_i the share of the T*k assignments routed to expert i, p_i the mean (normalised)
    router probability of expert i. 1.0 for a perfectly balanced router, up to E when one expert takes all."""
    counts_E = jnp.sum(jax.nn.one_hot(experts_Tk, n_experts, dtype=jnp.float32), axis=(0, 1))
    fraction_E = counts_E / experts_Tk.size
    mean_prob_E = jnp.mean(probs_TE / jnp.sum(probs_TE, axis=-1, keepdims=True), axis=0)
    return n_experts * jnp.sum(fraction_E * mean_prob_E), fraction_E


def z_loss(logits_TE):
    return jnp.mean(jnp.square(jax.nn.logsumexp(logits_TE, axis=-1)))


def capacity(cfg: ModelConfig, tokens_per_group: int) -> int:
    return max(1, math.ceil(cfg.moe_capacity_factor * cfg.moe_top_k * tokens_per_group / cfg.moe_experts))


class MoE(nn.Module):
    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        E, D, F = cfg.moe_experts, cfg.d_model, self.expert_width
        std = cfg.init_std / cfg.width_mult ** 0.5
        out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5 / cfg.width_mult ** 0.5
        expert = lambda name, shape, names, s: self.param(  # noqa: E731
            name, partitioned(nn.initializers.normal(s), names), shape, cfg.weight_dtype)
        self.router = expert("router", (D, E), ("embed", None), std)
        n_in = 2 if cfg.ffn in GATED else 1
        self.wi = expert("wi", (n_in, E, D, F), (None, "exp", "embed", "mlp"), std)
        self.wo = expert("wo", (E, F, D), ("exp", "mlp", "embed"), out_std)
        if cfg.moe_shared_experts:
            self.shared = MLP(dataclasses.replace(cfg, d_ff=F * cfg.moe_shared_experts, use_bias=False))

    @property
    def expert_width(self) -> int:
        return self.cfg.moe_d_ff or self.cfg.d_ff

    def _expert_ffn(self, matmul, x):
        """act(x W_in) W_out (or SwiGLU) with `matmul(x, w)` doing the per-expert contraction."""
        cfg, dt = self.cfg, self.cfg.compute_dtype
        wi, wo = self.wi.astype(dt), self.wo.astype(dt)
        if cfg.ffn in GATED:
            h = GATED[cfg.ffn](matmul(x, wi[0])) * matmul(x, wi[1])
        else:
            h = ACTIVATIONS[cfg.ffn](matmul(x, wi[0]))
        return matmul(h, wo)

    def __call__(self, x_BLD):
        cfg = self.cfg
        B, L, D = x_BLD.shape
        E = cfg.moe_experts
        x_BLD = x_BLD.astype(cfg.compute_dtype)
        logits_BLE = jnp.einsum("bld,de->ble", x_BLD, self.router.astype(cfg.compute_dtype),
                                preferred_element_type=jnp.float32)
        self.sow("intermediates", "router_logits", logits_BLE)  # kept only when asked for (tests, analysis)
        logits_TE = logits_BLE.reshape(B * L, E)
        weights_Tk, experts_Tk, probs_TE = route(logits_TE, cfg)
        balance, fraction_E = balance_loss(probs_TE, experts_Tk, E)
        self.sow("losses", "moe_balance", cfg.moe_balance_weight * balance)
        self.sow("losses", "moe_z", cfg.moe_z_weight * z_loss(logits_TE))
        if cfg.moe_capacity_factor > 0:
            y_BLD, kept = self._capacity(x_BLD, weights_Tk.reshape(B, L, -1), experts_Tk.reshape(B, L, -1))
        else:
            y_BLD, kept = self._dropless(x_BLD, weights_Tk, experts_Tk), jnp.ones((), jnp.float32)
        self.sow(STATS_COLLECTION, "moe_expert_share_min", jnp.min(fraction_E))
        self.sow(STATS_COLLECTION, "moe_expert_share_max", jnp.max(fraction_E))
        self.sow(STATS_COLLECTION, "moe_dropped", 1.0 - kept)
        if cfg.moe_shared_experts:
            y_BLD = y_BLD + self.shared(x_BLD)
        return y_BLD

    def _dropless(self, x_BLD, weights_Tk, experts_Tk):
        """Sort the T*k assignments by expert; one ragged (grouped) matmul per weight; unsort and combine."""
        B, L, D = x_BLD.shape
        k = weights_Tk.shape[1]
        x_TD = x_BLD.reshape(B * L, D)
        experts_A = experts_Tk.reshape(-1)
        order_A = jnp.argsort(experts_A, stable=True)
        group_sizes_E = jnp.bincount(experts_A, length=self.cfg.moe_experts).astype(jnp.int32)
        x_AD = x_TD[order_A // k]
        y_AD = self._expert_ffn(lambda x, w: jax.lax.ragged_dot(x, w, group_sizes_E), x_AD)
        y_TkD = jnp.zeros_like(y_AD).at[order_A].set(y_AD).reshape(B * L, k, D)
        y_TD = jnp.einsum("tkd,tk->td", y_TkD, weights_Tk.astype(y_TkD.dtype))
        return y_TD.reshape(B, L, D)

    def _capacity(self, x_BLD, weights_BLk, experts_BLk):
        """GShard dispatch per sequence: each expert's queue holds C tokens, first choices ahead of second."""
        B, L, D = x_BLD.shape
        E, k = self.cfg.moe_experts, weights_BLk.shape[-1]
        C = capacity(self.cfg, L)
        onehot_BkLE = jax.nn.one_hot(experts_BLk.swapaxes(1, 2), E, dtype=jnp.int32)
        queue_BkLE = jnp.cumsum(onehot_BkLE.reshape(B, k * L, E), axis=1).reshape(B, k, L, E) - 1
        position_BLk = jnp.sum(queue_BkLE * onehot_BkLE, axis=-1).swapaxes(1, 2)
        kept_BLk = position_BLk < C
        slot_BLkEC = (jax.nn.one_hot(experts_BLk, E, dtype=x_BLD.dtype)[..., None]
                      * jax.nn.one_hot(jnp.where(kept_BLk, position_BLk, C), C, dtype=x_BLD.dtype)[..., None, :])
        dispatch_BLEC = jnp.sum(slot_BLkEC, axis=2)
        combine_BLEC = jnp.einsum("blkec,blk->blec", slot_BLkEC, weights_BLk.astype(x_BLD.dtype))
        x_EBCD = jnp.einsum("blec,bld->ebcd", dispatch_BLEC, x_BLD)
        x_EBCD = nn.with_logical_constraint(x_EBCD, ("exp", "batch", None, "embed"))  # the all-to-all
        y_EBCD = self._expert_ffn(lambda x, w: jnp.einsum("ebcd,edf->ebcf", x, w), x_EBCD)
        y_EBCD = nn.with_logical_constraint(y_EBCD, ("exp", "batch", None, "embed"))
        y_BLD = jnp.einsum("blec,ebcd->bld", combine_BLEC, y_EBCD)
        return y_BLD, jnp.mean(kept_BLk.astype(jnp.float32))
