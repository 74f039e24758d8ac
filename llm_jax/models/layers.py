"""Building blocks: logically partitioned projections, norms (LayerNorm, RMSNorm), feed-forward networks."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models.config import ModelConfig


def partitioned(init, names: Sequence[str | None]):
    return nn.with_logical_partitioning(init, tuple(names))


class Dense(nn.Module):
    """y = x . W (+ b), contracting the last `n_in` axes of x; W's and b's axes carry logical names."""

    cfg: ModelConfig
    features: tuple[int, ...]
    n_in: int
    kernel_names: tuple[str | None, ...]
    bias_names: tuple[str | None, ...]
    std: float

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        in_shape = x.shape[x.ndim - self.n_in:]
        kernel = self.param("kernel", partitioned(nn.initializers.normal(self.std), self.kernel_names),
                            in_shape + self.features, cfg.weight_dtype)
        contract = (tuple(range(x.ndim - self.n_in, x.ndim)), tuple(range(self.n_in)))
        y = jax.lax.dot_general(x.astype(cfg.compute_dtype), kernel.astype(cfg.compute_dtype), (contract, ((), ())))
        if cfg.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros, self.bias_names), self.features,
                              cfg.weight_dtype)
            y = y + bias.astype(cfg.compute_dtype)
        return y


def dense(cfg: ModelConfig, features, n_in: int, kernel_names, bias_names, name: str, std: float | None = None):
    """A hidden (width x width) projection. Under muP its init std shrinks by 1/sqrt(width_mult), keeping the
    variance 1/fan_in-proportional as width grows (its learning rate shrinks by 1/width_mult, in the optimizer)."""
    features = features if isinstance(features, tuple) else (features,)
    std = (std or cfg.init_std) / cfg.width_mult ** 0.5
    return Dense(cfg, features, n_in, tuple(kernel_names), tuple(bias_names), std, name=name)


class Norm(nn.Module):
    """LayerNorm (x - mean) / std * scale + bias, or RMSNorm x / rms * scale; statistics in float32."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BLD):
        cfg = self.cfg
        x = x_BLD.astype(jnp.float32)
        if cfg.norm == "layernorm":
            x = x - jnp.mean(x, axis=-1, keepdims=True)
        y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + cfg.norm_eps)
        scale = self.param("scale", partitioned(nn.initializers.ones, ("embed",)), (x.shape[-1],), cfg.weight_dtype)
        y = y * scale.astype(jnp.float32)
        if cfg.norm == "layernorm" and cfg.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros, ("embed",)), (x.shape[-1],),
                              cfg.weight_dtype)
            y = y + bias.astype(jnp.float32)
        return y.astype(cfg.compute_dtype)


ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # GPT-2's "gelu_new"
}


GATED = {  # gated FFNs (Shazeer 2020): act(x W_gate) * (x W_up), then W_down
    "swiglu": jax.nn.silu,
    "geglu": ACTIVATIONS["gelu_tanh"],  # T5 v1.1's "gated-gelu"
}


class MLP(nn.Module):
    """FFN(x) = act(x W1 + b1) W2 + b2, or gated: SwiGLU(x) = (silu(x W_gate) * (x W_up)) W_down, GEGLU alike."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BLD):
        cfg = self.cfg
        out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5  # GPT-2: residual projections scaled by depth
        if cfg.ffn in GATED:
            gate = dense(cfg, cfg.d_ff, 1, ("embed", "mlp"), ("mlp",), "wi_gate")(x_BLD)
            up = dense(cfg, cfg.d_ff, 1, ("embed", "mlp"), ("mlp",), "wi_up")(x_BLD)
            h_BLF = GATED[cfg.ffn](gate) * up
        else:
            h_BLF = ACTIVATIONS[cfg.ffn](dense(cfg, cfg.d_ff, 1, ("embed", "mlp"), ("mlp",), "wi")(x_BLD))
        h_BLF = nn.with_logical_constraint(h_BLF, ("batch", "length", "mlp"))
        return dense(cfg, cfg.d_model, 1, ("mlp", "embed"), ("embed",), "wo", std=out_std)(h_BLF)
