"""Beam search with the KV cache, step for step the algorithm of transformers' `generate(num_beams=N,
do_sample=False)` (transformers 5.x `GenerationMixin._beam_search`), so that both return the same beams and scores.

The guide's score of a hypothesis of t new tokens is its summed log-probability divided by t**alpha (alpha =
`length_penalty`; t counts the new tokens only, the EOS that ended it included, never the prompt):

    score = log P(y_1..y_t | prompt) / t**alpha

alpha > 0 favours longer hypotheses, alpha < 0 shorter ones; alpha = 0 ranks by log P alone.

The algorithm (N = num_beams running beams, K = 2N candidates per step):
1. Prefill the prompt once (batch 1) and copy its cache into N rows. Beam 0 starts at log P 0 and beams 1..N-1 at
   -1e9, so the first step extends beam 0 only.
2. Each step: log_softmax of every running beam's logits plus its summed log P gives N x V candidate scores; keep
   the top K over all beams x vocabulary. A candidate "finishes" when its token is EOS or it reaches
   `max_new_tokens`.
3. The N best candidates that did not finish become the next running beams (their cache rows are gathered from
   their parents': a gather on the batch axis of every cache leaf). K = 2N guarantees N of them exist.
4. Finished candidates among the top N of the K (not the backups beyond N) become hypotheses with score
   log P / t**alpha; the N best hypotheses so far are kept in fixed-size arrays, ranked by score.
5. Stop when every candidate finished (max_new_tokens reached), or when all N hypothesis slots are filled and
   - early_stopping=True: at once;
   - early_stopping=False (transformers' default): the best running beam's log P divided by its *current*
     length**alpha no longer beats the worst kept hypothesis (a heuristic: with alpha > 0 a longer beam could
     still overtake it);
   - early_stopping="never": as False, but the running beam's best possible score uses max_new_tokens**alpha when
     alpha > 0 (a true upper bound: log P only falls as a beam grows, and t**alpha is largest at T).
   Stopping also freezes the hypothesis list (transformers adds nothing once either condition holds).

The whole search is one `lax.while_loop` on the device (one decode step and one selection per iteration); the
host only prefills and reads the N hypotheses at the end. Shapes: N beams, K = 2N candidates, V vocabulary,
T = max_new_tokens. Batches of prompts are not supported (one prompt per call), nor several EOS ids (transformers
keeps (1 + number of EOS ids) * N candidates; with one EOS id that is the K = 2N here).
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError
from llm_jax.infer.decode import CACHE_ROUND, _prefill, empty_cache

NEG = -1.0e9  # transformers' "impossible" score: added to candidates that must not be chosen


class Beam(NamedTuple):
    token_ids: list[int]  # new tokens, without the EOS that ended the hypothesis (if one did)
    score: float          # sum of log-probabilities / t**length_penalty, t = len(token_ids) + eos
    eos: bool             # True when the hypothesis ended on EOS (counted in t), False at max_new_tokens


class BeamResult(NamedTuple):
    beams: list[Beam]  # the num_return best hypotheses, best first
    steps: int         # search steps run (transformers' len(scores)): the prefill, then steps - 1 decodes of N rows
    ttft_s: float      # the prefill
    total_s: float


class _State(NamedTuple):
    step: jax.Array          # new tokens every running beam holds
    run_ids_NT: jax.Array    # running beams' new tokens
    run_logp_N: jax.Array    # running beams' summed log-probabilities
    cache: dict              # the running beams' KV cache, row n = beam n
    hyp_ids_NT: jax.Array    # kept finished hypotheses, best first
    hyp_score_N: jax.Array   # their scores (log P / t**alpha), NEG in empty slots
    hyp_len_N: jax.Array     # their lengths t (EOS included)
    hyp_done_N: jax.Array    # slot holds a real hypothesis (transformers' is_sent_finished)
    improvable: jax.Array    # the early-stopping heuristic still allows an improvement
    go: jax.Array            # keep searching


class _Rules(NamedTuple):
    eos_id: jax.Array         # int32, -1 for none
    denom_T: jax.Array        # (t)**alpha for t = 1..T in float32 (computed in float64 on the host like torch)
    stop_when_full: jax.Array  # early_stopping is True
    bound_at_max: jax.Array    # early_stopping == "never" and alpha > 0: the heuristic divides by T**alpha


def _select(state: _State, logits_NV, rules: _Rules, num_beams: int, max_new: int) -> _State:
    """One beam-search step on the logits of the running beams (transformers' steps b-g)."""
    N, T = num_beams, max_new
    K = 2 * N
    t = state.step
    logp_NV = jax.nn.log_softmax(logits_NV.astype(jnp.float32), axis=-1)
    V = logp_NV.shape[-1]
    total_NV = logp_NV + state.run_logp_N[:, None]
    cand_logp_K, flat_K = jax.lax.top_k(total_NV.reshape(-1), K)
    parent_K, token_K = flat_K // V, (flat_K % V).astype(jnp.int32)
    cand_ids_KT = state.run_ids_NT[parent_K].at[:, t].set(token_K)
    finished_K = (token_K == rules.eos_id) | (t + 1 >= T)

    # The next running beams: the best N candidates that did not finish.
    run_logp_N, pick_N = jax.lax.top_k(cand_logp_K + jnp.where(finished_K, NEG, 0.0), N)
    parent_N = parent_K[pick_N]
    cache = jax.tree.map(lambda c: jnp.take(c, parent_N, axis=c.ndim - 4), state.cache)

    # Hypotheses: finished candidates among the top N join the kept ones if they rank in the best N.
    just_K = finished_K & (jnp.arange(K) < N)
    score_K = cand_logp_K / rules.denom_T[t]
    score_K = score_K + jnp.where(jnp.all(state.hyp_done_N) & rules.stop_when_full, NEG, 0.0)
    score_K = score_K + jnp.where(state.improvable, 0.0, NEG)
    score_K = score_K + jnp.where(just_K, 0.0, NEG)
    hyp_score_N, keep_N = jax.lax.top_k(jnp.concatenate([state.hyp_score_N, score_K]), N)
    hyp_ids_NT = jnp.concatenate([state.hyp_ids_NT, cand_ids_KT])[keep_N]
    hyp_len_N = jnp.concatenate([state.hyp_len_N, jnp.full((K,), t + 1, jnp.int32)])[keep_N]
    hyp_done_N = jnp.concatenate([state.hyp_done_N, just_K])[keep_N]

    # transformers' _check_early_stop_heuristic and _beam_search_has_unfinished_sequences.
    best = run_logp_N[0] / jnp.where(rules.bound_at_max, rules.denom_T[T - 1], rules.denom_T[t])
    worst_N = jnp.where(hyp_done_N, jnp.min(hyp_score_N), NEG)
    improvable = state.improvable & jnp.any(best > worst_N)
    go = improvable & ~(jnp.all(hyp_done_N) & rules.stop_when_full) & ~jnp.all(finished_K)
    return _State(t + 1, cand_ids_KT[pick_N], run_logp_N, cache, hyp_ids_NT, hyp_score_N, hyp_len_N, hyp_done_N,
                  improvable, go)


@functools.partial(jax.jit, static_argnames=("model", "num_beams", "max_new"))
def _search(model, params, cache_1, first_logits_1V, prompt_len, rules: _Rules, num_beams: int, max_new: int):
    """The whole search on the device from the prefilled prompt's cache (batch 1) and last logits."""
    N, T = num_beams, max_new
    cache = jax.tree.map(lambda c: jnp.repeat(c, N, axis=c.ndim - 4), cache_1)
    state = _State(jnp.int32(0), jnp.zeros((N, T), jnp.int32), jnp.full((N,), NEG, jnp.float32).at[0].set(0.0),
                   cache, jnp.zeros((N, T), jnp.int32), jnp.full((N,), NEG, jnp.float32), jnp.zeros((N,), jnp.int32),
                   jnp.zeros((N,), bool), jnp.bool_(True), jnp.bool_(True))
    state = _select(state, jnp.broadcast_to(first_logits_1V, (N, first_logits_1V.shape[-1])), rules, N, T)

    def body(state: _State) -> _State:
        token_N1 = jax.lax.dynamic_index_in_dim(state.run_ids_NT, state.step - 1, axis=1)
        positions_N1 = jnp.full((N, 1), prompt_len + state.step - 1, jnp.int32)
        logits_N1V, variables = model.apply({"params": params, "cache": state.cache}, token_N1, positions_N1,
                                            mutable=["cache"])
        return _select(state._replace(cache=variables["cache"]), logits_N1V[:, 0], rules, N, T)

    state = jax.lax.while_loop(lambda s: s.go, body, state)
    return state.hyp_ids_NT, state.hyp_score_N, state.hyp_len_N, state.step


def beam_search(model, params, prompt_ids: list[int], max_new_tokens: int, context: int, *, num_beams: int,
                length_penalty: float = 1.0, eos_id: int | None = None, num_return: int = 1,
                early_stopping: bool | str = False) -> BeamResult:
    """The `num_return` best hypotheses of a beam search of width `num_beams` (best first), scored
    log P / t**length_penalty over the t new tokens; see the module docstring for the exact algorithm.
    `context` is the model's seq_len: the prompt and its new tokens must fit in it."""
    if not prompt_ids:
        raise UserError("a prompt is empty (the tokenizer produced no tokens for it): give it some text")
    if num_beams < 1 or not 1 <= num_return <= num_beams:
        raise UserError(f"beam search needs num_beams >= 1 and 1 <= num_return <= num_beams; got num_beams="
                        f"{num_beams}, num_return={num_return}")
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if early_stopping not in (True, False, "never"):
        raise UserError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    P = len(prompt_ids)
    if P + max_new_tokens > context:
        raise UserError(f"a prompt of {P} tokens plus {max_new_tokens} new tokens exceeds the model's context of "
                        f"{context} tokens (model.seq_len); shorten the prompt or ask for fewer tokens")
    slots = min(context, -(-(P + max_new_tokens) // CACHE_ROUND) * CACHE_ROUND)
    start = time.perf_counter()
    cache = empty_cache(model, params, 1, slots)
    logits_1V, cache = _prefill(model, params, cache, jnp.asarray([prompt_ids], jnp.int32),
                                jnp.asarray([P], jnp.int32))
    logits_1V.block_until_ready()
    ttft = time.perf_counter() - start
    alpha = float(length_penalty)
    rules = _Rules(jnp.int32(-1 if eos_id is None else eos_id),
                   jnp.asarray([t ** alpha for t in range(1, max_new_tokens + 1)], jnp.float32),
                   jnp.bool_(early_stopping is True), jnp.bool_(early_stopping == "never" and alpha > 0.0))
    ids_NT, score_N, len_N, steps = jax.device_get(_search(model, params, cache, logits_1V, jnp.int32(P), rules,
                                                    num_beams, max_new_tokens))
    total = time.perf_counter() - start
    beams = []
    for n in range(num_return):
        ids = np.asarray(ids_NT[n, :len_N[n]]).tolist()
        eos = eos_id is not None and bool(ids) and ids[-1] == eos_id
        beams.append(Beam(ids[:-1] if eos else ids, float(score_N[n]), eos))
    return BeamResult(beams, int(steps), ttft, total)
