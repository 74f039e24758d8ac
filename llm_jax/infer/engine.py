"""Continuous batching: a fixed number of decode rows; requests join as rows free up, finished ones leave.

The cache is slot-based, not paged: one row of `(layers, rows, slots, kv_heads, head_dim)` per running request,
slot = position, exactly `infer/decode.py`'s layout. A joining request is prefilled into its row in place (one
jitted call that slices the row out of the cache, runs the prompt and writes the row back; prompts are padded to a
multiple of 64 so a handful of shapes compile), then every row decodes together: one jitted call runs up to
`steps_per_sync` decode steps on the device, each row with its own position, token budget, stop ids, seed and
sampling parameters. Between calls the host hands out the new tokens, retires finished rows and admits waiting
requests. A finished row needs no cleanup: the next prefill overwrites its prompt slots and the causal rule on
positions hides everything after them.

Why slots and not pages: on one host the rows are few and the cache for all of them fits (SmolLM2-135M: 94 MB per
row of 2,048 slots in float32); a slot row needs no block table, no gather in attention and reuses the training
mask unchanged. Pages pay off when memory, not compute, bounds the batch (many long, mostly short-lived requests on
an accelerator) and for shared prompt prefixes; that is the next step, not this one.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError
from llm_jax.infer.decode import CACHE_ROUND, _prefill, empty_cache
from llm_jax.infer.sampling import sample_rows

MAX_STOP_IDS = 4  # stop token ids per request (EOS, end of turn, ...)


@dataclasses.dataclass(eq=False)
class Request:
    """One generation request and, once served, its result. `on_token(request, token_id)` is called on the
    engine's thread for every new token; returning False stops the request there (finish_reason "stop").
    `on_finish(request)` is called (on the engine's thread) once it has finished for any reason."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop_ids: tuple[int, ...] = ()
    on_token: Callable[["Request", int], bool] | None = None
    on_finish: Callable[["Request"], None] | None = None
    new_ids: list[int] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None     # "stop" (a stop id or on_token said so), "length", "cancelled", "error"
    cancelled: bool = False
    submitted_at: float = 0.0
    first_token_at: float | None = None
    finished_at: float | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)

    def finish(self, reason: str, clock=time.perf_counter) -> None:
        self.finish_reason, self.finished_at = reason, clock()
        self.done.set()
        if self.on_finish is not None:
            self.on_finish(self)


def _sample(logits_BV, seed_B, index_B, temp_B, topk_B, topp_B):
    keys_B = jax.vmap(lambda s, i: jax.random.fold_in(jax.random.key(s), i))(seed_B, index_B)
    return sample_rows(logits_BV, keys_B, temp_B, topk_B, topp_B)


@functools.partial(jax.jit, static_argnames=("model",), donate_argnames=("cache",))
def _admit(model, params, cache, row, tokens_1P, length, seed, temp, topk, topp):
    """Prefills one prompt into row `row` of the cache; returns (its first token, the cache)."""
    row_cache = jax.tree.map(lambda c: jax.lax.dynamic_slice_in_dim(c, row, 1, axis=1), cache)
    logits_1V, row_cache = _prefill(model, params, row_cache, tokens_1P, length[None])
    cache = jax.tree.map(lambda c, r: jax.lax.dynamic_update_slice_in_dim(c, r, row, axis=1), cache, row_cache)
    first = _sample(logits_1V, seed[None], jnp.zeros(1, jnp.int32), temp[None], topk[None], topp[None])[0]
    return first, cache


@functools.partial(jax.jit, static_argnames=("model", "steps"), donate_argnames=("cache",))
def _steps(model, params, cache, rows, steps: int):
    """Up to `steps` decode steps for every active row. `rows` holds per-row arrays: token (the last one emitted,
    fed next), position (its position), count (emitted so far), budget, active, stop (B, MAX_STOP_IDS), seed,
    temp, topk, topp. A row emits its sampled token unless it is a stop id, and stays active while under its
    budget. Returns (emitted tokens (B, steps), -1 where a row emitted nothing; the new rows; the cache)."""
    B = rows["token"].shape[0]

    def cond(carry):
        i, rows, _, _ = carry
        return (i < steps) & jnp.any(rows["active"])

    def body(carry):
        i, rows, cache, out_BN = carry
        logits_B1V, state = model.apply({"params": params, "cache": cache}, rows["token"][:, None],
                                        rows["position"][:, None], mutable=["cache"])
        next_B = _sample(logits_B1V[:, 0], rows["seed"], rows["count"], rows["temp"], rows["topk"], rows["topp"])
        emit_B = rows["active"] & ~jnp.any(next_B[:, None] == rows["stop"], axis=1)
        out_BN = out_BN.at[:, i].set(jnp.where(emit_B, next_B, -1))
        count_B = rows["count"] + emit_B.astype(jnp.int32)
        rows = dict(rows, token=jnp.where(emit_B, next_B, rows["token"]), count=count_B,
                    position=rows["position"] + emit_B.astype(jnp.int32), active=emit_B & (count_B < rows["budget"]))
        return i + 1, rows, state["cache"], out_BN

    carry = (jnp.int32(0), rows, cache, jnp.full((B, steps), -1, jnp.int32))
    _, rows, cache, out_BN = jax.lax.while_loop(cond, body, carry)
    return out_BN, rows, cache


class Engine:
    """`submit` requests from any thread; `run_until_idle()` serves them on this one, or `start()` serves them on a
    background thread until `stop()`. `rows` requests decode together in a cache of `max_len` slots per row
    (a prompt plus its new tokens must fit)."""

    def __init__(self, model, params, context: int, *, rows: int = 8, max_len: int | None = None,
                 steps_per_sync: int = 4, clock=time.perf_counter):
        self.model, self.params, self.clock = model, params, clock
        self.max_len = min(context, -(-(max_len or context) // CACHE_ROUND) * CACHE_ROUND)
        self.steps_per_sync = steps_per_sync
        self.cache = empty_cache(model, params, rows, self.max_len)
        self.state = {"token": np.zeros(rows, np.int32), "position": np.zeros(rows, np.int32),
                      "count": np.zeros(rows, np.int32), "budget": np.zeros(rows, np.int32),
                      "active": np.zeros(rows, bool), "stop": np.full((rows, MAX_STOP_IDS), -1, np.int32),
                      "seed": np.zeros(rows, np.uint32), "temp": np.zeros(rows, np.float32),
                      "topk": np.zeros(rows, np.int32), "topp": np.ones(rows, np.float32)}
        self.running: list[Request | None] = [None] * rows
        self.waiting: collections.deque[Request] = collections.deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.error: BaseException | None = None

    # -- requests ---------------------------------------------------------------------------------------------
    def check(self, request: Request) -> None:
        """One UserError naming what is wrong with a request, before it queues."""
        if not request.prompt_ids:
            raise UserError("the prompt is empty (the tokenizer produced no tokens for it)")
        if request.max_tokens <= 0:
            raise UserError(f"max_tokens must be positive, got {request.max_tokens}")
        if len(request.prompt_ids) + request.max_tokens > self.max_len:
            raise UserError(f"a prompt of {len(request.prompt_ids)} tokens plus max_tokens {request.max_tokens} "
                            f"exceeds the engine's {self.max_len} tokens per sequence")
        if len(request.stop_ids) > MAX_STOP_IDS:
            raise UserError(f"at most {MAX_STOP_IDS} stop token ids per request, got {len(request.stop_ids)}")

    def submit(self, request: Request) -> Request:
        self.check(request)
        request.submitted_at = self.clock()
        with self._wake:
            if self.error is not None or self._stopping:
                raise UserError("the engine has stopped" + (f" after an error: {self.error}" if self.error else ""))
            self.waiting.append(request)
            self._wake.notify()
        return request

    def pending(self) -> int:
        return len(self.waiting) + sum(r is not None for r in self.running)

    # -- serving ----------------------------------------------------------------------------------------------
    def _finish(self, row: int, reason: str) -> None:
        request = self.running[row]
        self.running[row] = None
        self.state["active"][row] = False
        request.finish(reason, self.clock)

    def _emit(self, row: int, token: int) -> None:
        request = self.running[row]
        if request.first_token_at is None:
            request.first_token_at = self.clock()
        request.new_ids.append(token)
        if request.on_token is not None and request.on_token(request, token) is False:
            self._finish(row, "stop")

    def _admit_waiting(self) -> None:
        for row in range(len(self.running)):
            if self.running[row] is not None:
                continue
            with self._wake:
                if not self.waiting:
                    return
                request = self.waiting.popleft()
            n = len(request.prompt_ids)
            padded = np.zeros((1, -(-n // CACHE_ROUND) * CACHE_ROUND), np.int32)
            padded[0, :n] = request.prompt_ids
            s = self.state
            s["seed"][row], s["temp"][row] = request.seed, request.temperature
            s["topk"][row], s["topp"][row] = request.top_k, request.top_p
            s["stop"][row] = -1
            s["stop"][row, :len(request.stop_ids)] = request.stop_ids
            first, self.cache = _admit(self.model, self.params, self.cache, jnp.int32(row), jnp.asarray(padded),
                                       jnp.int32(n), s["seed"][row], s["temp"][row], s["topk"][row],
                                       s["topp"][row])
            first = int(first)
            self.running[row] = request
            if first in request.stop_ids:
                self._finish(row, "stop")
                continue
            s["token"][row], s["position"][row], s["count"][row] = first, n, 1
            s["budget"][row], s["active"][row] = request.max_tokens, True
            self._emit(row, first)
            if self.running[row] is not None and request.max_tokens == 1:
                self._finish(row, "length")

    def step(self) -> None:
        """Admit what fits, then run one call of decode steps and hand out its tokens."""
        self._admit_waiting()
        if not any(r is not None for r in self.running):
            return
        out, rows, self.cache = _steps(self.model, self.params, self.cache,
                                       {k: jnp.asarray(v) for k, v in self.state.items()}, self.steps_per_sync)
        out, rows = np.asarray(out), {k: np.array(v) for k, v in rows.items()}
        for row, request in enumerate(self.running):
            if request is None:
                continue
            if request.cancelled:
                self._finish(row, "cancelled")
                continue
            for token in out[row]:
                if token < 0 or self.running[row] is None:
                    break
                self._emit(row, int(token))
        live = [r is not None for r in self.running]
        self.state.update({k: v for k, v in rows.items() if k != "active"})
        self.state["active"] = rows["active"] & np.asarray(live)
        for row, request in enumerate(self.running):
            if request is not None and not rows["active"][row]:
                self._finish(row, "length" if rows["count"][row] >= rows["budget"][row] else "stop")

    def cancel(self, request: Request) -> None:
        """Drops a request (a client went away); it finishes with reason "cancelled" at the next step."""
        with self._wake:
            if request in self.waiting:
                self.waiting.remove(request)
                request.finish("cancelled", self.clock)
                return
            request.cancelled = True

    def run_until_idle(self) -> None:
        while self.pending():
            self.step()

    def start(self) -> None:
        """Serves on a background thread until `stop()`. A failure inside is kept in `self.error`, every
        request then running or waiting finishes with reason "error", and later submits are refused."""
        def loop():
            try:
                while True:
                    with self._wake:
                        while not self._stopping and not self.pending():
                            self._wake.wait()
                        if self._stopping:
                            return
                    self.step()
            except BaseException as e:  # noqa: BLE001 (kept and reported by the server, not lost in a thread)
                self.error = e
                for request in [r for r in self.running if r is not None] + list(self.waiting):
                    request.finish("error", self.clock)
        self._thread = threading.Thread(target=loop, name="llm-jax-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
