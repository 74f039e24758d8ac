"""Training objectives behind one registry: `get_objective(cfg.train.objective)`.

An objective is a loss over a batch plus the batch fields it needs (`base.Objective`); a new one is a new file
here and one entry in OBJECTIVES (docs/core.md shows one in twenty lines).
"""

from __future__ import annotations

from llm_jax.errors import UserError
from llm_jax.objectives.base import (AUX_COLLECTION, NOTHING_SOWN, STATS_COLLECTION, Objective, Sown, apply_with_aux,
                                     field_specs, sown_losses)
from llm_jax.objectives.causal_lm import CAUSAL_LM
from llm_jax.objectives.distill import DISTILL
from llm_jax.objectives.dpo import DPO
from llm_jax.objectives.grpo import GRPO
from llm_jax.objectives.mlm import MLM
from llm_jax.objectives.ppo import PPO
from llm_jax.objectives.reward import REWARD
from llm_jax.objectives.seq2seq import SEQ2SEQ
from llm_jax.objectives.sft import SFT
from llm_jax.objectives.span_corruption import SPAN_CORRUPTION
from llm_jax.objectives.vlm import VLM

OBJECTIVES: dict[str, Objective] = {o.name: o for o in (CAUSAL_LM, MLM, SPAN_CORRUPTION, SEQ2SEQ, SFT, REWARD, DPO,
                                                        DISTILL, GRPO, PPO, VLM)}


def get_objective(name: str, train_cfg=None) -> Objective:
    """The objective `name`, configured with the run's `train.*` settings when it takes any (DPO's beta)."""
    if name not in OBJECTIVES:
        raise UserError(f"train.objective={name!r}: unknown; choose one of {', '.join(OBJECTIVES)}")
    objective = OBJECTIVES[name]
    return objective.configure(train_cfg) if objective.configure and train_cfg is not None else objective


__all__ = ["AUX_COLLECTION", "NOTHING_SOWN", "OBJECTIVES", "Objective", "STATS_COLLECTION", "Sown", "apply_with_aux",
           "field_specs", "get_objective", "sown_losses"]
