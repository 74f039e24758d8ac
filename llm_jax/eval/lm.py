"""The model every evaluation task asks: log-likelihoods of continuations and generation until stop strings, with
lm-evaluation-harness's semantics so that numbers are comparable with the field's.

- `loglikelihood([(context, continuation), ...])` -> `[(sum log P(continuation | context), is_greedy), ...]`.
  The pair is tokenized the harness's way: trailing spaces of the context move to the continuation, the whole
  `context + continuation` is encoded once and the continuation's tokens are what follows the context's own
  encoding (so a BPE merge across the boundary is scored as the harness scores it). An empty context is the
  beginning-of-text token (end-of-text without one), as in the harness's `hf` model. A pair longer than the
  model's context keeps its last `seq_len + 1` tokens.
- `loglikelihood_rolling(texts)` -> total log-likelihood of each text, over disjoint windows of `seq_len`
  predicted tokens, each window conditioned on the tokens before it (the first on that same prefix token): the harness's
  `get_rolling_token_windows` with context_len 1.
- `generate_until(prompts, until=[...])` -> each prompt's continuation, cut before the first stop string; the
  continuous-batching engine (`infer/engine.py`, KV cache) decodes them `batch_size` rows at a time and a row stops
  as soon as a stop string or the end-of-text token appears.

Scoring is batched: requests are sorted by length, right-padded to a multiple of 32 tokens (a handful of
compiled shapes) and scored `batch_size` rows per jitted call; padding positions carry weight 0. Requests that
differ only in their last token share a row (MMLU's four one-token answers cost one forward pass, as in the
harness's own `hf` model). With `devices`
the parameters are laid out over the run's mesh (a model too big for one device) and every call traces under it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError
from llm_jax.infer.engine import Engine, Request
from llm_jax.infer.load import load_workdir
from llm_jax.infer.stops import StopText
from llm_jax.parallel.mesh import activate, rules_tuple

PAD_ROUND = 32
FINALS = 8  # candidate last tokens scored per row


@functools.partial(jax.jit, static_argnames=("model",))
def _score(model, params, tokens_BL, targets_BL, weights_BL, last_B, finals_BK):
    """Per row: the summed log-probability of the weighted targets before its last position and whether each is
    the argmax, and the log-probability of each of K candidate tokens at the last position and whether it is the
    argmax. Requests that differ only in their final token (multiple choice with one-token answers: MMLU's A-D)
    share one row."""
    logits_BLV = model.apply({"params": params}, tokens_BL).astype(jnp.float32)
    logp_BLV = jax.nn.log_softmax(logits_BLV, axis=-1)
    target_logp_BL = jnp.take_along_axis(logp_BLV, targets_BL[..., None], axis=-1)[..., 0]
    argmax_BL = jnp.argmax(logits_BLV, axis=-1)
    rows = jnp.arange(tokens_BL.shape[0])
    last_logp_BV, last_argmax_B = logp_BLV[rows, last_B], argmax_BL[rows, last_B]
    final_logp_BK = jnp.take_along_axis(last_logp_BV, finals_BK, axis=-1)
    greedy_B = jnp.all((argmax_BL == targets_BL) | (weights_BL == 0), axis=-1)
    return (jnp.sum(target_logp_BL * weights_BL, axis=-1), greedy_B, final_logp_BK,
            last_argmax_B[:, None] == finals_BK)


def rolling_windows(ids: Sequence[int], prefix_id: int, window: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) token pairs that score every token of `ids` once: disjoint runs of at most
    `window` predicted tokens, each with the `window` tokens before it as context (the first with `prefix_id`)."""
    ids, out, done = list(ids), [], 0
    while done < len(ids):
        end = min(done + window, len(ids))
        history = ([prefix_id] + ids)[max(0, end - window): done + 1]  # inputs end where the run's targets begin
        out.append((history, ids[done:end]))
        done = end
    return out


class EvalModel:
    """A work directory's decoder-only model, asked the questions evaluation tasks ask (see the module docstring)."""

    def __init__(self, loaded, *, batch_size: int = 16, name: str | None = None, log=None):
        family = loaded.cfg.model.family
        if family != "decoder":
            raise UserError(f"evaluation tasks score and generate continuations with a decoder-only model; this one "
                            f"is model.family={family!r} (use `eval cloze` for encoders and encoder-decoders)")
        self.loaded, self.model, self.params = loaded, loaded.model, loaded.params
        self.tokenizer, self.cfg = loaded.tokenizer, loaded.cfg
        self.seq_len = int(loaded.cfg.model.seq_len)
        self.batch_size = batch_size
        self.name = name or "llm_jax"
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        tok = self.tokenizer
        self.prefix_id = next(i for i in (tok.bos_id, tok.eos_id, 0) if i is not None)  # the harness's hf: BOS first
        self._engine: Engine | None = None  # kept between calls; rebuilt when a longer cache is needed

    @classmethod
    def from_workdir(cls, workdir: str, *, batch_size: int = 16, devices=None, log=None) -> "EvalModel":
        return cls(load_workdir(workdir, devices=devices, log=log), batch_size=batch_size,
                   name=os.path.basename(os.path.normpath(workdir)), log=log)

    def _mesh(self):
        loaded = self.loaded
        return activate(loaded.mesh, rules_tuple(loaded.cfg)) if loaded.mesh is not None else contextlib.nullcontext()

    # -- log-likelihoods --------------------------------------------------------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """The harness's tokenization of one (context, continuation) pair (see the module docstring)."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        context_ids = self.tokenizer.encode(context) if context else []
        cont = whole[len(context_ids):]
        return (context_ids or [self.prefix_id]), cont

    def score_tokens(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, bool]]:
        """(sum log P(continuation | context), is_greedy) of token-id pairs, batched by length; pairs whose
        inputs are the same and differ only in their last token are scored by one row."""
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for i, (context, cont) in enumerate(pairs):
            if not cont:
                raise UserError(f"request {i}: the continuation is empty (it encodes to no tokens): nothing to score")
            whole = (list(context) + list(cont))[-(self.seq_len + 1):]
            key = (tuple(whole[:-1]), min(len(cont), len(whole) - 1))  # inputs, continuation tokens scored
            groups.setdefault(key, []).append((i, whole[-1]))
        rows = [(inputs, n_cont, finals[k:k + FINALS]) for (inputs, n_cont), finals in groups.items()
                for k in range(0, len(finals), FINALS)]
        rows.sort(key=lambda r: -len(r[0]))
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        with self._mesh():
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                L = min(self.seq_len, -(-len(chunk[0][0]) // PAD_ROUND) * PAD_ROUND)
                B = self.batch_size if len(rows) > self.batch_size else len(chunk)  # one shape for every batch
                tokens, targets = np.zeros((B, L), np.int32), np.zeros((B, L), np.int32)
                weights, last = np.zeros((B, L), np.float32), np.zeros(B, np.int32)
                finals = np.zeros((B, FINALS), np.int32)
                for r, (inputs, n_cont, row_finals) in enumerate(chunk):
                    n = len(inputs)
                    tokens[r, :n], targets[r, :n - 1], last[r] = inputs, inputs[1:], n - 1
                    weights[r, n - n_cont:n - 1] = 1.0  # the continuation's tokens before the last one
                    finals[r, :len(row_finals)] = [token for _, token in row_finals]
                out = _score(self.model, self.params, *map(jnp.asarray, (tokens, targets, weights, last, finals)))
                prefix_B, prefix_greedy_B, final_BK, final_greedy_BK = map(np.asarray, out)
                for r, (_, _, row_finals) in enumerate(chunk):
                    for k, (i, _) in enumerate(row_finals):
                        results[i] = (float(prefix_B[r] + final_BK[r, k]),
                                      bool(prefix_greedy_B[r] and final_greedy_BK[r, k]))
        return results

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self.score_tokens([self.encode_pair(c, x) for c, x in requests])

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        pairs, owner = [], []
        for t, text in enumerate(texts):
            for pair in rolling_windows(self.tokenizer.encode(text), self.prefix_id, self.seq_len):
                pairs.append(pair)
                owner.append(t)
        totals = [0.0] * len(texts)
        for t, (logp, _) in zip(owner, self.score_tokens(pairs)):
            totals[t] += logp
        return totals

    # -- generation -------------------------------------------------------------------------------------------
    def generate_until(self, prompts: Sequence[str], *, until: Sequence[str] = (), max_new_tokens: int = 256,
                       temperature: float = 0.0, top_p: float = 1.0, seeds: Sequence[int] | None = None,
                       progress: str | None = None) -> list[str]:
        """Each prompt's continuation cut before the first of `until` (or at end-of-text, or after
        `max_new_tokens`). A prompt too long for the context keeps its last seq_len - max_new_tokens tokens."""
        if max_new_tokens >= self.seq_len:
            raise UserError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of "
                            f"{self.seq_len} tokens (model.seq_len)")
        stop_ids = () if self.tokenizer.eos_id is None else (int(self.tokenizer.eos_id),)
        seeds = list(seeds) if seeds is not None else [0] * len(prompts)
        keep = self.seq_len - max_new_tokens
        encoded = [self.tokenizer.encode(p)[-keep:] or [self.prefix_id] for p in prompts]
        longest = max((len(ids) for ids in encoded), default=0) + max_new_tokens
        if self._engine is None or self._engine.max_len < longest:  # a cache no longer than these prompts need
            with self._mesh():
                self._engine = Engine(self.model, self.params, self.seq_len, rows=self.batch_size, max_len=longest,
                                      steps_per_sync=8)
        texts, requests = [], []
        for ids, seed in zip(encoded, seeds):
            text = StopText(self.tokenizer, list(until))
            request = Request(ids, max_new_tokens, float(temperature), 0, float(top_p), int(seed) % 2**32, stop_ids,
                              on_token=text.update)
            texts.append(text)
            requests.append(self._engine.submit(request))
        done, last = 0, 0
        with self._mesh():
            while self._engine.pending():
                self._engine.step()
                done = sum(r.done.is_set() for r in requests)
                if progress and done - last >= max(1, len(requests) // 10):
                    self.log(f"{progress}: {done}/{len(requests)} generated")
                    last = done
        if any(r.finish_reason == "error" for r in requests):
            raise RuntimeError(f"generation failed inside the engine: {self._engine.error}")
        return [t.text for t in texts]
