"""One sequence decoded a token at a time with the KV cache, the choice of each token made on the host.

`decode.generate` keeps the whole loop on the device; that is right for free text, but a constraint decided by a
host-side automaton (JSON that matches a schema: `constrained.py`, tool calls: `toolcall.py`) must see each step's
logits before the next token is fed. The `Stepper` runs the same prefill as `generate` (the same cache layout and
position rule), then one jitted step per token: the logits of the next position come back as a numpy vector.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError
from llm_jax.infer.decode import CACHE_ROUND, _prefill, empty_cache, pad_prompts


@functools.partial(jax.jit, static_argnames=("model",))
def _step(model, params, cache, token_11, position_11):
    logits_11V, state = model.apply({"params": params, "cache": cache}, token_11, position_11, mutable=["cache"])
    return logits_11V[0, 0], state["cache"]


def _round_up(n: int) -> int:
    return -(-n // CACHE_ROUND) * CACHE_ROUND


class Stepper:
    """`start(prompt_ids, budget)` -> logits_V of the first new position; `feed(token)` -> logits_V of the next.
    `budget` is how many tokens may follow the prompt (the cache is sized for it, within model.seq_len)."""

    def __init__(self, model, params, context: int):
        self.model, self.params, self.context = model, params, context
        self.cache, self.position, self.slots = None, 0, 0

    def start(self, prompt_ids: list[int], budget: int) -> np.ndarray:
        _, lengths, _ = pad_prompts([list(prompt_ids)], budget, {"model's": self.context})
        n = int(lengths[0])
        tokens_1P = np.zeros((1, min(_round_up(n), self.context)), np.int32)  # few prompt shapes to compile
        tokens_1P[0, :n] = prompt_ids
        self.slots = min(self.context, _round_up(n + budget))
        cache = empty_cache(self.model, self.params, 1, self.slots)
        logits_1V, self.cache = _prefill(self.model, self.params, cache, jnp.asarray(tokens_1P), jnp.asarray(lengths))
        self.position = n
        return np.asarray(logits_1V[0])

    def feed(self, token: int) -> np.ndarray:
        if self.cache is None:
            raise RuntimeError("Stepper.feed before start")
        if self.position >= self.slots:
            raise UserError(f"the sequence reached its {self.slots} cache slots (prompt + budget); ask for fewer "
                            f"tokens or a shorter prompt")
        logits_V, self.cache = _step(self.model, self.params, self.cache, jnp.full((1, 1), token, jnp.int32),
                                     jnp.full((1, 1), self.position, jnp.int32))
        self.position += 1
        return np.asarray(logits_V)
