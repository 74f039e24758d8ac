"""ModelConfig: the model's strict view of the `model.*` section of the one schema (`llm_jax/config.py`).

Modules never see the run config. They read this frozen dataclass, which has one field per schema key and no
defaults of its own: `from_config` takes every key of a resolved `cfg.model` and refuses any it does not know
(and any it lacks), so the schema and the model cannot drift apart silently — a test also checks that every
field is read somewhere in `llm_jax/models/`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from llm_jax.errors import UserError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# Schema keys that only derive other keys in config.resolve (ffn_multiple_of rounds the derived d_ff): the
# modules read what they derived, so the view drops them by name.
SCHEMA_ONLY = ("ffn_multiple_of",)
PIPELINE_FIELDS = ("pipeline_stages", "pipeline_microbatches", "pipeline_repeats")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str
    vocab_size: int
    seq_len: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    positions: str
    rope_theta: float
    rope_scaling: str
    rope_factor: float
    rope_original_len: int
    rope_low_freq_factor: float
    rope_high_freq_factor: float
    rope_yarn_beta_fast: float
    rope_yarn_beta_slow: float
    rope_attention_factor: float
    norm: str
    norm_eps: float
    norm_position: str
    ffn: str
    tie_embeddings: bool
    use_bias: bool
    dropout: float
    dtype: str
    param_dtype: str
    remat: str
    scan_unroll: int
    loss_chunk: int
    init_std: float
    attention_impl: str
    attention_block: int
    attention_window: int
    local_global_pattern: int
    attention_stride: int
    attention_global_tokens: int
    document_mask: bool
    mup: bool
    mup_base_width: int
    type_vocab_size: int
    num_labels: int
    mask_token_id: int
    rel_buckets: int
    rel_max_distance: int
    moe_experts: int
    moe_top_k: int
    moe_every: int
    moe_shared_experts: int
    moe_d_ff: int
    moe_router: str
    moe_norm_topk: bool
    moe_capacity_factor: float
    moe_balance_weight: float
    moe_z_weight: float
    weight_quant: str
    quant_group_size: int
    kv_cache_dtype: str
    peft: str
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    lora_targets: str
    prefix_len: int
    value_head: bool
    prune_masks: bool
    adapter_dim: int
    image_size: int
    patch_size: int
    vision_layers: int
    projector: str
    # From mesh.* (training): > 1 stage runs the layer stack as a pipeline; inference has none.
    pipeline_stages: int = 1
    pipeline_microbatches: int = 1
    pipeline_repeats: int = 1

    @classmethod
    def from_config(cls, model_cfg, mesh_cfg=None) -> "ModelConfig":
        """The view of a resolved `cfg.model` (ConfigDict or dict); with `mesh_cfg` (training) the pipeline
        layout comes along. A key the view does not know, or one it lacks, is an error naming it."""
        values = {k: v for k, v in dict(model_cfg).items() if k not in SCHEMA_ONLY}
        names = {f.name for f in dataclasses.fields(cls)} - set(PIPELINE_FIELDS)
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown or missing:
            raise UserError(f"the model config does not match the model's view of the schema: "
                            f"{'unknown ' + ', '.join(unknown) if unknown else ''}"
                            f"{'; ' if unknown and missing else ''}{'missing ' + ', '.join(missing) if missing else ''}")
        if mesh_cfg is not None and mesh_cfg.stage > 1:
            values.update(pipeline_stages=mesh_cfg.stage, pipeline_repeats=mesh_cfg.pipeline_repeats,
                          pipeline_microbatches=mesh_cfg.pipeline_microbatches or 2 * mesh_cfg.stage)
        return cls(**values)

    @property
    def width_mult(self) -> float:
        """muP's width multiplier d_model / base width (1 without muP)."""
        return self.d_model / self.mup_base_width if self.mup else 1.0

    @property
    def mask_id(self) -> int:
        """MLM's [MASK] token: model.mask_token_id, or with -1 the last id (the tokenizer a run trains leaves it
        free)."""
        return self.vocab_size - 1 if self.mask_token_id == -1 else self.mask_token_id

    @property
    def image_tokens(self) -> int:
        """Positions the vlm family's image takes before the text (0 for a text-only family): the decoder's text
        starts at this position, and a KV cache keeps this many slots for the image."""
        return (self.image_size // self.patch_size) ** 2 if self.family == "vlm" else 0

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def weight_dtype(self):
        return DTYPES[self.param_dtype]
