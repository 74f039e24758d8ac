"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023) with greedy verification: a small draft model
proposes `draft_tokens` (k) tokens one at a time with its own KV cache, the target scores all k + 1 positions in
ONE forward over its cache, and the longest prefix of the proposal the target agrees with is kept together with
the target's own next token. Every kept token is the target's greedy choice given the tokens before it, so the
output is the target's greedy output (token for token, up to float rounding of near-tied logits: a (k + 1)-token
forward sums in another order than a 1-token one), with EOS and the budget handled exactly like
`decode.generate`. Each block costs k draft forwards and one target forward and yields 1..k+1 tokens.

Both caches are slot = position (`decode.py`): the target writes the keys of all k + 1 positions, and those of
rejected proposals sit after the kept prefix, hidden by the causal rule on positions and overwritten by the next
block, which starts at the first of them. When a whole proposal was kept the draft never saw its own last
proposal: the next block first feeds it that token (a `lax.cond`, taken only then). Every block has the same
shapes, so the whole loop is one `lax.while_loop` on the device. Rows of a batch accept independently (each row
has its own positions; a catch-up step re-writes the other rows' slot of their own token, harmlessly); a row that
has stopped rides along until every row has.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.data.tokenizers import FILENAMES
from llm_jax.errors import UserError
from llm_jax.infer.decode import CACHE_ROUND, _prefill, empty_cache, pad_prompts

TOKENIZER_FILES = (*FILENAMES, "vocab.json", "merges.txt", "encoder.json", "vocab.bpe")  # + *.tiktoken


class SpecResult(NamedTuple):
    new_ids: list[list[int]]
    accepted: int          # draft tokens the target agreed with (all rows, all blocks)
    proposed: int          # draft tokens proposed: draft_tokens per block per row still running
    target_forwards: int   # verification forwards (blocks) of the loop, the prefill not counted
    draft_tokens: int
    ttft_s: float          # both prefills and the first token of every row
    total_s: float
    tokens: int            # new tokens over all rows

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


def _argmax(logits):
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)  # what sampling.sample_token does at temperature 0


@functools.partial(jax.jit, static_argnames=("target", "draft", "k", "max_new"))
def _speculate(target, t_params, t_cache, draft, d_params, d_cache, first_logits_BV, lengths_B, budget_B, eos_id,
               k: int, max_new: int):
    """The block loop on the device: (target greedy tokens (B, max_new + k + 1) of which the first m_B are kept,
    m_B, accepted draft tokens per row, blocks per row, blocks run)."""
    B = lengths_B.shape[0]
    rows_B1 = jnp.arange(B)[:, None]
    first_B = _argmax(first_logits_BV)
    out_BN = jnp.zeros((B, max_new + k + 1), jnp.int32).at[:, 0].set(first_B)
    m_B = jnp.ones(B, jnp.int32)  # kept tokens; the last one is not in either cache yet
    done_B = (first_B == eos_id) | (m_B >= budget_B)

    def cond(carry):
        return ~jnp.all(carry[6])

    def draft_step(d_cache, token_B, pos_B):
        logits_B1V, state = draft.apply({"params": d_params, "cache": d_cache}, token_B[:, None], pos_B[:, None],
                                        mutable=["cache"])
        return state["cache"], _argmax(logits_B1V[:, 0])

    def body(carry):
        t_cache, d_cache, out_BN, m_B, prev_B, last_B, done_B, behind_B, accepted_B, blocks_B, n = carry
        pos_B = lengths_B + m_B - 1  # the position of `last`
        # a row whose whole proposal was kept: the draft never saw that proposal's last token (`prev`) yet
        d_cache = jax.lax.cond(jnp.any(behind_B), lambda c: draft_step(c, prev_B, pos_B - 1)[0], lambda c: c,
                               d_cache)

        def propose(i, c):
            d_cache, token_B, drafts_BK = c
            d_cache, token_B = draft_step(d_cache, token_B, pos_B + i)
            return d_cache, token_B, drafts_BK.at[:, i].set(token_B)

        d_cache, _, drafts_BK = jax.lax.fori_loop(0, k, propose, (d_cache, last_B, jnp.zeros((B, k), jnp.int32)))
        # target: the last kept token and the k proposals in one forward
        tokens_BK1 = jnp.concatenate([last_B[:, None], drafts_BK], 1)
        logits_BKV, state = target.apply({"params": t_params, "cache": t_cache}, tokens_BK1,
                                         pos_B[:, None] + jnp.arange(k + 1), mutable=["cache"])
        greedy_BK1 = _argmax(logits_BKV)  # the target's choice after each of the k + 1 tokens
        a_B = jnp.sum(jnp.cumprod(drafts_BK == greedy_BK1[:, :k], axis=1), axis=1).astype(jnp.int32)
        # kept: greedy[0..a] (= the a agreeing proposals + the target's own next token); the rest is overwritten
        # (a stopped row's writes land after its kept tokens or past the buffer: never read)
        out_BN = out_BN.at[rows_B1, m_B[:, None] + jnp.arange(k + 1)].set(greedy_BK1, mode="drop")
        kept_BK1 = jnp.arange(k + 1) <= a_B[:, None]
        eos_B = jnp.any(kept_BK1 & (greedy_BK1 == eos_id), axis=1)
        live_B = ~done_B
        new_m_B = jnp.where(live_B, m_B + a_B + 1, m_B)
        prev_B = jnp.where(live_B, jnp.take_along_axis(tokens_BK1, a_B[:, None], 1)[:, 0], prev_B)
        last_B = jnp.where(live_B, jnp.take_along_axis(greedy_BK1, a_B[:, None], 1)[:, 0], last_B)
        accepted_B = accepted_B + jnp.where(live_B, a_B, 0)
        blocks_B = blocks_B + live_B.astype(jnp.int32)
        behind_B = live_B & (a_B == k)
        done_B = done_B | eos_B | (new_m_B >= budget_B)
        return (state["cache"], d_cache, out_BN, new_m_B, prev_B, last_B, done_B, behind_B, accepted_B, blocks_B,
                n + 1)

    zeros_B = jnp.zeros(B, jnp.int32)
    carry = (t_cache, d_cache, out_BN, m_B, zeros_B, first_B, done_B, jnp.zeros(B, bool), zeros_B, zeros_B,
             jnp.int32(0))
    _, _, out_BN, m_B, _, _, _, _, accepted_B, blocks_B, n = jax.lax.while_loop(cond, body, carry)
    return out_BN, m_B, accepted_B, blocks_B, n


def _cut(tokens: list[int], budget: int, eos_id: int | None) -> list[int]:
    """What `generate` emits of a greedy sequence: up to the first EOS (excluded), at most `budget` tokens."""
    tokens = tokens[:budget]
    return tokens[:tokens.index(eos_id)] if eos_id is not None and eos_id in tokens else tokens


def check_draft(target_cfg, draft_cfg, target_dir: str | None = None, draft_dir: str | None = None) -> None:
    """One UserError if the draft cannot serve the target: another vocabulary size, a non-decoder, or (given both
    work directories) tokenizer files that differ."""
    for what, m in (("target", target_cfg), ("draft", draft_cfg)):
        if m.family != "decoder":
            raise UserError(f"speculative decoding needs decoder-only models; the {what} has model.family="
                            f"{m.family!r}")
    if target_cfg.vocab_size != draft_cfg.vocab_size:
        raise UserError(f"the draft model's vocabulary ({draft_cfg.vocab_size} tokens) differs from the target's "
                        f"({target_cfg.vocab_size}): a draft must share the target's tokenizer")
    if target_dir is not None and draft_dir is not None:
        target_tok, draft_tok = tokenizer_digest(target_dir), tokenizer_digest(draft_dir)
        if target_tok != draft_tok:
            raise UserError(f"the draft {draft_dir!r} has another tokenizer than the target {target_dir!r} "
                            f"({', '.join(sorted(draft_tok)) or 'none'} vs {', '.join(sorted(target_tok)) or 'none'}"
                            f", contents compared): a draft must share the target's tokenizer")


def tokenizer_digest(workdir: str) -> dict[str, str]:
    """{tokenizer file name: sha256 of its bytes} of a work directory."""
    out = {}
    for name in sorted(os.listdir(workdir)):
        if name in TOKENIZER_FILES or name.endswith(".tiktoken"):
            with open(os.path.join(workdir, name), "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def speculative_generate(target_model, target_params, draft_model, draft_params, prompts: list[list[int]],
                         max_new_tokens: int | list[int], context: int, *, draft_tokens: int = 4,
                         eos_id: int | None = None) -> SpecResult:
    """Greedy new token ids of the target for each prompt (a batch), drafted by `draft_model`: the same tokens
    `decode.generate(target_model, ...)` gives at temperature 0. `context` is the target's `seq_len`; the draft's
    own `seq_len` must hold the prompt and its new tokens too."""
    check_draft(target_model.cfg, draft_model.cfg)
    if draft_tokens < 1:
        raise UserError(f"draft_tokens must be at least 1, not {draft_tokens}")
    B, k = len(prompts), int(draft_tokens)
    budgets, lengths, tokens = pad_prompts(prompts, max_new_tokens,
                                           {"model's": context, "draft model's": draft_model.cfg.seq_len})
    max_new = max(budgets)
    if max_new == 0:
        return SpecResult([[] for _ in prompts], 0, 0, 0, k, 0.0, 0.0, 0)
    # the last block may write k positions past the budget: slots for them when they fit (else they are dropped)
    need = int((lengths + np.asarray(budgets)).max()) + k
    start = time.perf_counter()
    caches = []
    for model, params in ((target_model, target_params), (draft_model, draft_params)):
        slots = min(model.cfg.seq_len, -(-need // CACHE_ROUND) * CACHE_ROUND)
        logits, cache = _prefill(model, params, empty_cache(model, params, B, slots), jnp.asarray(tokens),
                                 jnp.asarray(lengths))
        caches.append((logits, cache))
    (logits, t_cache), (_, d_cache) = caches
    logits.block_until_ready()
    ttft = time.perf_counter() - start
    out, m, accepted, blocks, n = _speculate(
        target_model, target_params, t_cache, draft_model, draft_params, d_cache, logits,
        jnp.asarray(lengths), jnp.asarray(budgets, np.int32), -1 if eos_id is None else int(eos_id), k, max_new)
    out, m, accepted, blocks = (np.asarray(x) for x in (out, m, accepted, blocks))
    total = time.perf_counter() - start
    new_ids = [_cut(out[row, :m[row]].tolist(), budgets[row], eos_id) for row in range(B)]
    return SpecResult(new_ids, int(accepted.sum()), int(k * blocks.sum()), int(n), k, ttft, total,
                      sum(len(r) for r in new_ids))
