"""Passkey retrieval (Mohtashami & Jaggi, 2023): a random number hidden in filler text at a chosen depth, asked
for at the end. A model that extends its context should still find it far from the question.

Two generators share the wording: `training_documents` writes whole text documents (a corpus to train on, so a
small model learns the task at its training length) and `examples` builds exact-length token sequences for
evaluation from a tokenizer and held-out filler text. `accuracy` scores them teacher-forced: an example counts as
retrieved when the model's most likely next token is the key's token at every position of the key, which is
exactly when greedy decoding would write the key (the tokens before each position are then the same).

Every chunk starts with a space, so with a whitespace-splitting tokenizer (sentencepiece, byte-level BPE) the
token sequence of an example equals the tokenization of its text.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError

# the filler of Mohtashami & Jaggi's passkey test: predictable, so only the key is news
FILLER = " ".join(["The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."] * 40)
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
ANSWER = " {key}"
DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _key(rng: np.random.RandomState) -> str:
    return str(rng.randint(10_000, 100_000))  # five digits


def _words_slice(text: str, rng: np.random.RandomState, chars: int) -> str:
    """About `chars` characters of `text` from a random offset, cut at spaces."""
    start = rng.randint(0, max(1, len(text) - chars))
    piece = text[start:start + chars]
    return " " + " ".join(piece.split()[1:-1])  # drop the partial first and last words


def training_documents(filler: str, n: int, chars: tuple[int, int], seed: int = 0) -> list[str]:
    """`n` documents of filler (a random slice of `filler` of `chars[0]`..`chars[1]` characters; repeated as
    needed) with a needle at a uniform random depth, ending in the question and its answer."""
    filler = filler * (1 + 2 * chars[1] // max(1, len(filler)))
    rng = np.random.RandomState(seed)
    docs = []
    for _ in range(n):
        key = _key(rng)
        body = _words_slice(filler, rng, rng.randint(chars[0], chars[1] + 1))
        cut = body.rfind(" ", 0, int(rng.uniform() * len(body)) + 1)
        cut = max(cut, 0)
        docs.append((body[:cut] + NEEDLE.format(key=key) + body[cut:] + QUESTION + ANSWER.format(key=key) + ".")
                    .strip())
    return docs


class Examples(NamedTuple):
    tokens_NL: np.ndarray   # prompt + answer, each row exactly `length` tokens
    answer_N: np.ndarray    # where each row's answer starts
    answer_len_N: np.ndarray
    depth_N: np.ndarray     # the needle's depth in the filler, 0 (start) .. 1 (next to the question)


def examples(tokenizer, filler: str, length: int, depths, per_depth: int, seed: int = 0) -> Examples:
    """`per_depth` examples of exactly `length` tokens for each needle depth, built from token slices of
    `filler` (held-out text, at least a few times `length` tokens)."""
    filler_ids = np.asarray(tokenizer.encode(filler), np.int32)
    question = tokenizer.encode(QUESTION)
    rng = np.random.RandomState(seed)
    rows, starts, lens, where = [], [], [], []
    for depth in depths:
        for _ in range(per_depth):
            key = _key(rng)
            needle, answer = tokenizer.encode(NEEDLE.format(key=key)), tokenizer.encode(ANSWER.format(key=key))
            n_filler = length - len(needle) - len(question) - len(answer)
            if n_filler < 0 or filler_ids.size < n_filler:
                raise UserError(f"passkey examples of {length} tokens need more room or filler: the needle, "
                                f"question and answer take {length - n_filler}, the filler has {filler_ids.size}")
            offset = rng.randint(0, filler_ids.size - n_filler + 1)
            body = filler_ids[offset:offset + n_filler]
            pre = int(round(depth * n_filler))
            row = np.concatenate([body[:pre], needle, body[pre:], question, answer]).astype(np.int32)
            rows.append(row)
            starts.append(length - len(answer))
            lens.append(len(answer))
            where.append(depth)
    return Examples(np.stack(rows), np.asarray(starts), np.asarray(lens), np.asarray(where, np.float32))


@functools.partial(jax.jit, static_argnames=("model",))
def _greedy_BL(model, params, inputs_BL):
    return jnp.argmax(model.apply({"params": params}, inputs_BL), axis=-1)


def retrieved(model, params, ex: Examples, batch_size: int = 4) -> np.ndarray:
    """(N,) bool: the model's greedy next token is the key's token at every position of the key."""
    N, L = ex.tokens_NL.shape
    hits = []
    for i in range(0, N, batch_size):
        tokens = ex.tokens_NL[i:i + batch_size]
        pad = batch_size - tokens.shape[0]
        inputs = np.pad(tokens[:, :-1], ((0, pad), (0, 0)))
        predicted = np.asarray(_greedy_BL(model, params, inputs))[:tokens.shape[0]]
        for row, (pred, toks) in enumerate(zip(predicted, tokens)):
            s, n = ex.answer_N[i + row], ex.answer_len_N[i + row]
            hits.append(bool((pred[s - 1:s - 1 + n] == toks[s:s + n]).all()))  # position p predicts token p + 1
    return np.asarray(hits)


def accuracy_by_depth(model, params, ex: Examples, batch_size: int = 4) -> dict[float, float]:
    hits = retrieved(model, params, ex, batch_size)
    return {float(d): float(hits[ex.depth_N == d].mean()) for d in np.unique(ex.depth_N)}
