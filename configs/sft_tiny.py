"""sft_tiny: supervised fine-tuning (all parameters) of the default tiny model on checkable instruction tasks.

Purpose: the guide's SFT on a 2-core CPU: the 3.7M-parameter Shakespeare model of `make train` (runs/tiny) learns
         to answer addition, word-reversal and word-count requests in the plain chat template; the loss is on the
         assistant's replies only, examples packed with document masks.
Run:     llm-jax data make-sft --output runs/sft_data            # 9,000 train / 300 held-out chat records
         llm-jax train --config configs/sft_tiny.py --workdir runs/sft_tiny
         llm-jax eval instruct --workdir runs/sft_tiny --data runs/sft_data/test.jsonl
Reaches: held-out exact match before -> after per task: experiments/finetune/results/README.md
         (python experiments/finetune/run.py runs this and sft_lora_tiny's ranks).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "sft_tiny"
    c.model.document_mask = True              # packed examples never see each other
    c.data.update(sft="runs/sft_data/train.jsonl", loss_mask="completion", pack=True)
    c.checkpoint.update(restore_from="runs/tiny", restore_mode="params", every=0)
    c.train.update(objective="sft", steps=300, batch_size=8, lr=1e-3, lr_min=1e-4, warmup_steps=20,
                   weight_decay=0.0, eval_every=100, eval_batches=4, log_every=25)
    return c
