"""tools_tiny: fine-tune the default tiny model to call a calculator when one is offered, and to answer directly
when not (the guide's tool use on a 2-core CPU).

Purpose: arithmetic word problems (synthetic: `llm-jax tools make-data`) that a 3.7M-parameter model cannot solve
         in its head but can by copying the numbers into a calculator call: every problem is in the training file
         twice, with the calculator offered (call, result, answer) and without (the answer); loss on the
         assistant's turns only. The call is constrained to the tool's JSON schema at inference.
Run:     llm-jax tools make-data --output runs/tool_data
         llm-jax train --config configs/tools_tiny.py --workdir runs/tools_tiny
         llm-jax tools score --workdir runs/tools_tiny --data runs/tool_data/test.jsonl
Reaches: held-out accuracy with vs without the calculator: experiments/tools/results/README.md
         (python experiments/tools/run.py runs all three).
"""

from llm_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "tools_tiny"
    c.model.document_mask = True
    c.data.update(sft="runs/tool_data/train.jsonl", loss_mask="completion", pack=True)
    c.checkpoint.update(restore_from="runs/tiny", restore_mode="params", every=0)
    c.train.update(objective="sft", steps=800, batch_size=8, lr=2e-3, lr_min=2e-4, warmup_steps=20,
                   weight_decay=0.0, eval_every=100, eval_batches=4, log_every=50)
    return c
