"""t5_small: the t5-small shape — encoder-decoder, 6 + 6 layers, d=512, 8 heads of 64, ReLU FFN 2048, T5's
relative position bias (32 buckets, max distance 128), pre-LN RMSNorm without biases, tied head, vocab 32128.

Purpose: the reference encoder-decoder size (60.5M parameters, as transformers counts t5-small) for span-corruption
pretraining on a TPU slice or GPU; Hugging Face T5 checkpoints convert with llm_jax/interop/t5.py.
Run:     llm-jax train --config configs/t5_small.py --workdir runs/t5_small \
             --config.data.corpus=/path/to/text --config.data.tokenizer=/path/to/spiece.model
Reaches: not run on this project's machines; `llm-jax estimate --config configs/t5_small.py` reports
         60,506,624 parameters, equal to the initialised tree (tests/models/test_encdec.py).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "t5_small"
    c.model.update(family="encdec", vocab_size=32128, seq_len=512, d_model=512, n_layers=6, n_heads=8, d_ff=2048,
                   positions="relative", rel_buckets=32, rel_max_distance=128, norm="rmsnorm", norm_eps=1e-6,
                   norm_position="pre", ffn="relu", tie_embeddings=True, use_bias=False, dropout=0.1,
                   init_std=0.044)
    c.train.update(objective="span_corruption", steps=100_000, batch_size=128, lr=1e-3, lr_min=1e-4,
                   warmup_steps=10_000, schedule="inverse_sqrt", weight_decay=0.0, eval_every=1000, log_every=50)
    c.checkpoint.every = 2000
    return c
