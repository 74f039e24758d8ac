"""The model a fine-tuning run starts from (checkpoint.restore_from) and the parameters the run adds to it.

DPO's reference log-probabilities and GRPO's KL penalty both need that starting model, frozen; a run that adds
parameters (PEFT adapters, a value head) takes them from its own initialisation where the base has none.
"""

from __future__ import annotations

import jax

from llm_jax import checkpoint
from llm_jax.models import peft
from llm_jax.train.optimizer import param_path


def is_new_param(path: str) -> bool:
    """Parameters a fine-tuning run adds to the model it starts from: PEFT's and a value head."""
    return any(part in peft.ALL_KEYS or part == "value_head" for part in path.split("/"))


def added_params(trainable) -> list[str]:
    """The kinds of parameters this run's model adds to a base (`is_new_param`): lora_a, prefix_key, value_head..."""
    return sorted({part for p, _ in jax.tree_util.tree_flatten_with_path(trainable.abstract.params)[0]
                   for part in param_path(p).split("/") if is_new_param(part)})


def reference_params(cfg, trainable):
    """The parameters of checkpoint.restore_from laid out for this run (added ones as initialised), frozen."""
    init = trainable.init_state().params if added_params(trainable) else None
    params, _, _ = checkpoint.restore_other_run(cfg.checkpoint.restore_from, trainable.abstract, True,
                                                (is_new_param, init))
    return params
