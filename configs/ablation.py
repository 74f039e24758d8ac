"""ablation: the small, fast base of the committed ablation sweeps and the IsoFLOP study (2-core CPU).

Purpose: a model big enough to separate architecture choices on Shakespeare in about a minute of CPU time:
         d_model 96, 3 layers, 3 heads of 32, context 128, a 1,024-piece sentencepiece BPE vocabulary,
         400 steps of 16 sequences (0.8M tokens). Every `experiments/ablations/*.py` sweep varies one choice.
Run:     llm-jax train --config configs/ablation.py --workdir runs/ablation
         llm-jax sweep run experiments/ablations/norm.py    # one of the committed studies
Reaches: 4.19 ± 0.03 nats/token validation loss (2 seeds; unigram entropy 5.71) in about 45 s on 2 cores;
         each variant's figure is in experiments/ablations/results/.
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "ablation"
    c.model.update(vocab_size=1024, seq_len=128, d_model=96, n_layers=3, n_heads=3)
    c.model.scan_unroll = 3          # shallow: unrolled layers run faster on CPU
    c.train.update(steps=400, batch_size=16, lr=3e-3, lr_min=3e-4, warmup_steps=40, eval_every=100,
                   eval_batches=8, log_every=50)
    c.checkpoint.every = 200
    return c
