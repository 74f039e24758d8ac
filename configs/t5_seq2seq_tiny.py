"""t5_seq2seq_tiny: the CPU encoder-decoder (t5_tiny's shape) trained with the plain seq2seq objective on
(input, target) pairs — a synthetic task: reverse the words of a Shakespeare verse line.

Purpose: the seq2seq objective and the pairs data path end to end on a laptop.
Run:     python experiments/seq2seq/make_pairs.py --out runs/pairs/reverse_words.jsonl
         llm-jax train --config configs/t5_seq2seq_tiny.py --workdir runs/t5_seq2seq_tiny
Reaches: see docs/families.md (held-out loss, token and sequence accuracy, wall time on a 2-core CPU).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "t5_seq2seq_tiny"
    c.model.update(family="encdec", d_model=128, n_layers=2, n_heads=4, positions="relative", norm="rmsnorm",
                   ffn="geglu", d_ff=512, tie_embeddings=False, use_bias=False, seq_len=20, vocab_size=2048)
    c.data.update(pairs="runs/pairs/reverse_words.jsonl", target_len=20, tokenizer_kind="word")
    c.train.update(objective="seq2seq", steps=1500, batch_size=32, lr=3e-3, warmup_steps=50)
    return c
