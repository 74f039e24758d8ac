"""extend_context: continued pretraining from 256 to 2,048 tokens with RoPE scaling (the extension stage).

Purpose: the guide's context extension on a 2-core CPU. A 433k-parameter RoPE model trained 2,000 steps at 256
         tokens on Shakespeare mixed with passkey documents (experiments/extend_context/run.py writes the corpora
         and trains that base) is trained 200 more steps at 2,048 tokens from its parameters with a fresh
         optimizer, with model.rope_scaling = none / linear (position interpolation) / yarn at factor 8.
Run:     python experiments/extend_context/run.py    # base, the three extensions, the evaluation, table + plot
         one stage by hand: llm-jax train --config configs/extend_context.py --workdir runs/extend_context/linear \
             --config.checkpoint.restore_from=runs/extend_context/base --config.data.corpus=... (see run.py)
Reaches: loss by position bucket and passkey accuracy before/after for each variant:
         experiments/extend_context/results/README.md.
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "extend_context"
    c.model.update(vocab_size=1024, seq_len=2048, d_model=96, n_layers=3, n_heads=3, positions="rope",
                   norm="rmsnorm", scan_unroll=3)
    c.model.update(rope_scaling="linear", rope_factor=8.0, rope_original_len=256)
    c.checkpoint.restore_mode = "params"   # the base's weights, a fresh optimizer and schedule
    c.train.update(steps=200, batch_size=2, lr=1e-3, lr_min=1e-4, warmup_steps=20, eval_every=100,
                   eval_batches=4, log_every=25)
    c.checkpoint.every = 100
    return c
