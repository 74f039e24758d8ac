"""Few-shot examples the way lm-evaluation-harness draws and joins them: an example is `context + " " + target`
and examples are separated from each other and from the scored item by a blank line. They come from a separate
file (`--fewshot-data`, e.g. MMLU's dev split) or from the task's own items, never the scored one, and are picked
`first_n` (the harness's MMLU sampler: exactly its examples) or at random with a fixed seed per scored item (the
same examples on every run, though not the harness's own random draw)."""

from __future__ import annotations

import random

from llm_jax.errors import UserError

FEWSHOT_SEED = 1234  # the harness's default sampler seed
SAMPLERS = ("random", "first_n")
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


def fewshot_examples(items: list, index: int, k: int, pool: list | None = None, sampler: str = "random") -> list:
    """The `k` examples for scored item `index`: from `pool` if given, else from the other items."""
    if sampler not in SAMPLERS:
        raise UserError(f"--fewshot-sampler {sampler!r}: must be one of {', '.join(SAMPLERS)}")
    if pool is None:
        if sampler == "first_n":
            if k >= len(items):
                raise UserError(f"--num-fewshot {k} needs at least {k + 1} items in the file (it has {len(items)})")
            return [x for j, x in enumerate(items[:k + 1]) if j != index][:k]
        return [items[j] for j in fewshot_indices(len(items), index, k)]
    if k > len(pool):
        raise UserError(f"--num-fewshot {k}: the --fewshot-data file has only {len(pool)} items")
    if sampler == "first_n":
        return pool[:k]
    return [pool[j] for j in random.Random(FEWSHOT_SEED + index).sample(range(len(pool)), k)]
