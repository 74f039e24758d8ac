"""ModelConfig: the resolved model fields the modules read (they never see the whole run config)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    seq_len: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    positions: str = "learned"
    rope_theta: float = 10000.0
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_position: str = "pre"
    ffn: str = "gelu"
    tie_embeddings: bool = True
    use_bias: bool = True
    dropout: float = 0.0
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    scan_unroll: int = 1
    init_std: float = 0.02
    attention_impl: str = "auto"
    document_mask: bool = False
    mup: bool = False
    mup_base_width: int = 256
    pipeline_stages: int = 1          # from mesh.stage: >1 runs the layer stack as a pipeline
    pipeline_microbatches: int = 1
    pipeline_repeats: int = 1

    @classmethod
    def from_config(cls, model_cfg, mesh_cfg=None) -> "ModelConfig":
        """Builds from a resolved `cfg.model` (ConfigDict or dict); keys not used by modules are ignored.
        With `mesh_cfg` (training), the pipeline layout comes along; without it (inference), none."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dict(model_cfg).items() if k in fields}
        if mesh_cfg is not None and mesh_cfg.stage > 1:
            values.update(pipeline_stages=mesh_cfg.stage, pipeline_repeats=mesh_cfg.pipeline_repeats,
                          pipeline_microbatches=mesh_cfg.pipeline_microbatches or 2 * mesh_cfg.stage)
        return cls(**values)

    @property
    def width_mult(self) -> float:
        """muP's width multiplier d_model / base width (1 without muP)."""
        return self.d_model / self.mup_base_width if self.mup else 1.0

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def weight_dtype(self):
        return DTYPES[self.param_dtype]
