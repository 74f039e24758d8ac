"""Runs 10 training steps of one small config on each given layout and prints the losses as JSON.

Used in fresh interpreters, because the fake CPU device count must be set before JAX starts:
`XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/parallel/sharded_run.py 1,8,1 2,2,2,1/2/2`.
A layout is `[stage,]data,fsdp,tensor[@dcn_data][/grad-accumulation micro-batches[/pipeline repeats]]`, or
`VARIANT:data,fsdp,expert,tensor[,context[,stage]]` for a model variant of VARIANTS on a mesh with an expert
(and a context) axis.
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from helpers import small_config  # noqa: E402
from llm_jax.train.state import state_bytes  # noqa: E402
from llm_jax.train.trainable import build_trainable  # noqa: E402

STEPS = 10
MODEL = dict(d_model=64, n_heads=8, n_kv_heads=4, n_layers=8, vocab_size=256, use_bias=False, positions="rope",
             norm="rmsnorm", ffn="swiglu", d_ff=128, tie_embeddings=False)
VARIANTS = {  # model overrides (and the objective, when not causal_lm) per variant tag
    "moe": dict(moe_experts=4, moe_top_k=2),                                   # dropless (ragged_dot)
    "moecap": dict(moe_experts=4, moe_top_k=2, moe_capacity_factor=2.0),      # capacity path, E/k: no drops
    "encdec": dict(family="encdec", objective="span_corruption", positions="relative", ffn="geglu", n_layers=4),
    "encoder": dict(family="encoder", objective="mlm", positions="learned", norm="layernorm", norm_position="post",
                    ffn="gelu", use_bias=True, tie_embeddings=True, n_kv_heads=8, type_vocab_size=2),  # BERT-like
    "ctx": dict(),                                                             # context parallelism, causal
    "ctxdoc": dict(document_mask=True),                                        # ... with document masks
    "ctxbw": dict(document_mask=True, attention_impl="blockwise", attention_block=8),  # ... the blockwise path
}


def batches(cfg):
    """Rows that repeat a random 4-token motif: learnable, so the losses move and any divergence shows."""
    B, L = cfg.train.batch_size, cfg.model.seq_len
    for step in range(STEPS):
        motifs = np.random.RandomState(step % 3).randint(0, cfg.model.vocab_size, (B, 4))
        tokens = np.tile(motifs, (1, L // 4 + 1))[:, : L + 1].astype(np.int32)
        cuts = (3 + 5 * np.arange(B)) % L  # with document masks: two documents per row, cut where the row says
        segments = (np.arange(L)[None] >= cuts[:, None]).astype(np.int32) + 1
        yield {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": segments}


def layout_config(layout: str):
    if ":" in layout:
        variant, sizes = layout.split(":")
        data, fsdp, expert, tensor, context, stage = [int(x) for x in sizes.split(",")] + [1, 1][sizes.count(",") - 3:]
        cfg = small_config(**{**MODEL, **VARIANTS[variant]})
        cfg.train.update(steps=STEPS, batch_size=32, warmup_steps=2, lr=5e-3)
        cfg.mesh.update(data=data, fsdp=fsdp, expert=expert, tensor=tensor, context=context, stage=stage)
        return cfg
    mesh, *rest = layout.split("/")
    mesh, _, dcn_data = mesh.partition("@")
    sizes = [int(x) for x in mesh.split(",")]
    if len(sizes) == 3:
        sizes = [1] + sizes
    micro, repeats = (int(rest[0]) if rest else 1), (int(rest[1]) if len(rest) > 1 else 1)
    cfg = small_config(**MODEL)
    cfg.train.update(steps=STEPS, batch_size=32, micro_batches=micro, warmup_steps=2, lr=5e-3)
    cfg.mesh.update(stage=sizes[0], data=sizes[1], fsdp=sizes[2], tensor=sizes[3], pipeline_repeats=repeats,
                    dcn_data=int(dcn_data or 1))
    return cfg


def run(layout: str):
    cfg = layout_config(layout)
    trainable = build_trainable(cfg)
    mesh, step_fn = trainable.mesh, trainable.train_step
    state = trainable.init_state()
    total_state = state_bytes(state)
    losses, memory, all_to_all, shard_shape = [], None, 0, None
    with trainable.activate():
        for i, batch in enumerate(batches(cfg)):
            device_batch = trainable.to_device(batch)
            if i == 0:
                compiled = step_fn.lower(state, device_batch).compile()
                analysis, hlo = compiled.memory_analysis(), compiled.as_text()
                all_to_all = len(re.findall(r"\ball-to-all(-start)?\(", hlo))
                shards = mesh.shape["data"] * mesh.shape["fsdp"] * mesh.shape["expert"]
                shard_shape = list(device_batch["inputs"].addressable_shards[0].data.shape)
                memory = {"argument_bytes": analysis.argument_size_in_bytes,
                          "batch_bytes": sum(x.nbytes for x in batch.values()) / shards,
                          "total_state_bytes": total_state}
            state, metrics = step_fn(state, device_batch)
            losses.append(float(metrics["loss"]))
    return {"layout": layout, "losses": losses, "memory": memory, "all_to_all": all_to_all,
            "shard_shape": shard_shape}


if __name__ == "__main__":
    print(json.dumps([run(layout) for layout in sys.argv[1:]]))
