"""bert_base: BERT-base (uncased) pretrained with masked language modelling — 12 layers, d=768, 12 heads, FFN
3072 (exact GELU), 512 learned positions, 2 token types, post-LN with LayerNorm eps 1e-12, dropout 0.1, MLM head
tied to the 30,522-token embedding.

Purpose: the shape of Hugging Face `bert-base-uncased` (llm_jax/interop/bert.py converts it both ways; docs/
families.md). `llm-jax estimate --config configs/bert_base.py` gives 110,104,890 parameters: BertModel's
109,482,240 plus the MLM head's 622,650 (transform 768*768+768, LayerNorm 2*768, output bias 30,522), checked
against the initialised tree by tests/models/test_encoder.py.
Run:     llm-jax train --config configs/bert_base.py --workdir runs/bert_base \
             --config.data.corpus=/path/to/text --config.data.tokenizer=/path/to/bert-base-uncased/tokenizer.json \
             --config.model.mask_token_id=103
         (103 is [MASK] in bert-base-uncased's vocabulary; with a tokenizer this run trains, keep -1: the last id
         is reserved for [MASK].)
Reaches: not run on this project's machines (BERT's 1M steps x 256 sequences are TPU-pod work); size a job
         with `llm-jax estimate`. Hyperparameters follow Devlin et al. except the schedule (cosine here, linear
         decay there) and the sequence length (512 throughout, 128 for 90% of steps there).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "bert_base"
    c.model.update(family="encoder", vocab_size=30522, seq_len=512, d_model=768, n_layers=12, n_heads=12, d_ff=3072,
                   positions="learned", norm="layernorm", norm_eps=1e-12, norm_position="post", ffn="gelu",
                   tie_embeddings=True, use_bias=True, dropout=0.1, type_vocab_size=2, init_std=0.02)
    c.train.update(objective="mlm", steps=1_000_000, batch_size=256, lr=1e-4, lr_min=0.0, warmup_steps=10_000,
                   weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6, eval_every=10_000, log_every=100)
    c.mesh.update(data=-1, fsdp=1, tensor=1)
    c.checkpoint.every = 10_000
    return c
