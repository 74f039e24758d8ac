"""Few-shot examples the way lm-evaluation-harness draws and joins them: drawn without replacement from the
task's own items with a fixed seed, never the scored item; an example is `context + " " + target` and examples
are separated from each other and from the scored item by a blank line."""

from __future__ import annotations

import random

from llm_jax.errors import UserError

FEWSHOT_SEED = 1234  # the harness's default sampler seed
FEWSHOT_DELIMITER = "\n\n"
TARGET_DELIMITER = " "


def fewshot_indices(n_items: int, index: int, k: int, seed: int = FEWSHOT_SEED) -> list[int]:
    """`k` example indices drawn without replacement from the other items (a fixed seed per scored item)."""
    if k == 0:
        return []
    if k >= n_items:
        raise UserError(f"--num-fewshot {k} needs at least {k + 1} items in the file (it has {n_items}): the "
                        f"examples are drawn from the other items")
    pool = random.Random(seed + index).sample(range(n_items), k + 1)
    return [i for i in pool if i != index][:k]
