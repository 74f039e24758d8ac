"""Building blocks: logically partitioned projections, norms (LayerNorm, RMSNorm), feed-forward networks."""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from llm_jax.models import lora
from llm_jax.models import quant_formats as formats
from llm_jax.models.config import ModelConfig


def partitioned(init, names: Sequence[str | None]):
    return nn.with_logical_partitioning(init, tuple(names))


class Dense(nn.Module):
    """y = x . W (+ b), contracting the last `n_in` axes of x; W's and b's axes carry logical names.

    With model.weight_quant (int8, int4, nf4) W is stored quantized (`llm_jax/models/quant_formats.py`) as `kernel_q`
    (codes over the flattened inputs: (I, *features) int8, or (I / 2, *features) uint8 for two packed 4-bit
    codes), `kernel_scale` and for int4 `kernel_offset` (per output channel, or per group of
    model.quant_group_size inputs), and dequantized to the compute dtype inside the matmul. The flattened input
    axis and the groups axis carry the first input axis's logical name.

    With model.peft="lora" a projection matched by model.lora_targets adds a low-rank update (`lora.delta`). With
    model.prune_masks a projection of the layer stack multiplies its kernel by `kernel_mask` (int8 0/1, never
    trained: `llm-jax prune` writes it), so pruned weights stay zero through further training."""

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
        if cfg.weight_quant == "none":
            kernel = self.param("kernel", partitioned(nn.initializers.normal(self.std), self.kernel_names),
                                in_shape + self.features, cfg.weight_dtype)
            if cfg.prune_masks and self.scope.path[0] == "layers":  # pruned weights stay zero through training
                mask = self.param("kernel_mask", partitioned(nn.initializers.ones, self.kernel_names),
                                  in_shape + self.features, jnp.int8)
                kernel = kernel * mask.astype(kernel.dtype)
            contract = (tuple(range(x.ndim - self.n_in, x.ndim)), tuple(range(self.n_in)))
            y = jax.lax.dot_general(x.astype(cfg.compute_dtype), kernel.astype(cfg.compute_dtype),
                                    (contract, ((), ())))
        else:
            y = self._quantized_matmul(x.reshape(x.shape[:x.ndim - self.n_in] + (math.prod(in_shape),)))
        if lora.targeted(cfg, self.scope.path):
            y = y + lora.delta(self, x, self.n_in, self.features, self.kernel_names)
        if cfg.use_bias:
            bias = self.param("bias", partitioned(nn.initializers.zeros, self.bias_names), self.features,
                              cfg.weight_dtype)
            y = y + bias.astype(cfg.compute_dtype)
        return y

    def _quantized_matmul(self, x_BI):
        """x . W for inputs flattened to (..., I), W dequantized from its parts: int8 whole; 4-bit as its even and
        odd input rows, each against the matching inputs (no re-interleaved matrix: formats.dequantize_halves)."""
        cfg, method = self.cfg, self.cfg.weight_quant
        n_in = x_BI.shape[-1]
        if method != "int8" and n_in % cfg.quant_group_size:
            raise ValueError(f"model.quant_group_size={cfg.quant_group_size} does not divide the {n_in} inputs of "
                             f"{'/'.join(self.scope.path)}")
        out_names = self.kernel_names[self.n_in:]
        names = {"q": self.kernel_names[:1] + out_names, "scale": out_names if method == "int8"
                 else self.kernel_names[:1] + out_names}
        names["offset"] = names["scale"]
        parts = {}
        for part, (shape, dtype) in formats.part_shapes(method, n_in, self.features, cfg.quant_group_size).items():
            init = nn.initializers.ones if part == "scale" else nn.initializers.zeros
            parts[part] = self.param(f"kernel_{part}", partitioned(init, names[part]), shape, dtype)
        x_BI = x_BI.astype(cfg.compute_dtype)
        contract = (((x_BI.ndim - 1,), (0,)), ((), ()))
        if method == "int8":
            return jax.lax.dot_general(x_BI, formats.dequantize(method, parts, cfg.compute_dtype), contract)
        even, odd = formats.dequantize_halves(method, parts, cfg.compute_dtype)
        return (jax.lax.dot_general(x_BI[..., 0::2], even, contract)
                + jax.lax.dot_general(x_BI[..., 1::2], odd, contract))


class QuantizedEmbed(nn.Module):
    """The token embedding (V, D) of a model with model.weight_quant: int8 codes `embedding_q` with one absmax
    scale per token `embedding_scale` (V,), whatever the projections' format. A lookup reads one row of codes; as
    the tied output head, each row's scale is its logit's per-channel scale. Same interface as nn.Embed."""

    cfg: ModelConfig

    def setup(self):
        V, D = self.cfg.vocab_size, self.cfg.d_model
        self.codes_VD = self.param("embedding_q", partitioned(nn.initializers.zeros, ("vocab", "embed")), (V, D),
                                   jnp.int8)
        self.scale_V = self.param("embedding_scale", partitioned(nn.initializers.ones, ("vocab",)), (V,),
                                  jnp.float32)

    def __call__(self, tokens_BL):
        codes_BLD = jnp.take(self.codes_VD, tokens_BL, axis=0).astype(jnp.float32)
        return (codes_BLD * jnp.take(self.scale_V, tokens_BL, axis=0)[..., None]).astype(self.cfg.compute_dtype)

    def attend(self, x_BLD):
        """Logits x . E^T with the dequantized table."""
        table_DV = formats.dequantize("int8", {"q": self.codes_VD.T, "scale": self.scale_V}, self.cfg.compute_dtype)
        return jnp.dot(x_BLD.astype(self.cfg.compute_dtype), table_DV)


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
