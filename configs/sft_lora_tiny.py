"""sft_lora_tiny: sft_tiny with LoRA: the base frozen, rank-16 adapters on every attention and MLP projection.

Purpose: parameter-efficient fine-tuning against full fine-tuning on the same data, steps and model
         (`--config.model.lora_rank=4|16|64` for the rank sweep); only the adapters get gradients and optimizer
         state (the trainable fraction is in the results table).
Run:     llm-jax data make-sft --output runs/sft_data
         llm-jax train --config configs/sft_lora_tiny.py --workdir runs/sft_lora_tiny
         llm-jax eval instruct --workdir runs/sft_lora_tiny --data runs/sft_data/test.jsonl
         llm-jax convert to-peft --workdir runs/sft_lora_tiny --out runs/sft_lora_tiny_peft   # Llama-shaped bases
Reaches: experiments/finetune/results/README.md (exact match, trainable fraction, optimizer bytes, step time).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "sft_lora_tiny"
    c.model.document_mask = True
    c.model.update(peft="lora", lora_rank=16, lora_alpha=32.0, lora_dropout=0.0)
    c.data.update(sft="runs/sft_data/train.jsonl", loss_mask="completion", pack=True)
    c.checkpoint.update(restore_from="runs/tiny", restore_mode="params", every=0)
    c.train.update(objective="sft", steps=300, batch_size=8, lr=3e-3, lr_min=3e-4, warmup_steps=20,
                   weight_decay=0.0, eval_every=100, eval_batches=4, log_every=25)  # sft_tiny's, a larger lr:
    return c                                                                        # adapters start at B = 0
