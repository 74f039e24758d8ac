"""Cloze accuracy: hide one token of a held-out window and ask the model for it — a probe that models trained
with different objectives can all answer, each the way its objective taught it:

- decoder (causal LM): the argmax next-token prediction after the tokens before the hidden one (left context);
- encoder (MLM): the hidden token replaced by [MASK], the argmax at its position (context on both sides);
- encoder-decoder (span corruption): the hidden token replaced by sentinel 0 in the encoder input; the decoder
  reads (start, sentinel 0) and its argmax is the answer (context on both sides).

The hidden position of each window is drawn uniformly from its middle half with a fixed seed, so every model is
asked about the same tokens. Accuracy is reported with its binomial standard error and the accuracy of always
answering the most frequent hidden token (`majority_baseline`): a model that has not learned to use context sits
there.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError

SEED = 0


def _predict(model, family: str, mask_id: int, params, tokens_BL, positions_B):
    """The model's argmax guess of the token at `positions_B` of each row, without seeing it."""
    B, L = tokens_BL.shape
    rows = jnp.arange(B)
    if family == "decoder":
        logits_BLV = model.apply({"params": params}, tokens_BL)
        return jnp.argmax(logits_BLV[rows, positions_B - 1], axis=-1)
    hidden_BL = tokens_BL.at[rows, positions_B].set(mask_id)
    if family == "encoder":
        logits_BLV = model.apply({"params": params}, hidden_BL, head="mlm")
        return jnp.argmax(logits_BLV[rows, positions_B], axis=-1)
    if family == "encdec":  # sentinel 0 is the top id, vocab_size - 1 (span corruption's <extra_id_0>)
        decoder_BT = jnp.stack([jnp.zeros(B, tokens_BL.dtype), jnp.full(B, mask_id, tokens_BL.dtype)], axis=1)
        logits_BTV = model.apply({"params": params}, hidden_BL, decoder_tokens_BT=decoder_BT)
        return jnp.argmax(logits_BTV[:, 1], axis=-1)
    raise UserError(f"cloze: model.family={family!r} has no cloze probe")


def cloze_accuracy(model, params, model_cfg, windows_NL: np.ndarray, batch_size: int = 16) -> dict:
    """{"accuracy", "stderr", "n", "majority_baseline"} over one hidden token per window of `windows_NL` (N, L)."""
    N, L = windows_NL.shape
    if N == 0 or L < 4:
        raise UserError(f"cloze: need at least one window of 4+ tokens (got {N} of {L})")
    family = model_cfg.family
    mask_id = model.cfg.mask_id if family == "encoder" else model_cfg.vocab_size - 1  # [MASK] / sentinel 0
    positions = np.random.RandomState(SEED).randint(L // 4, 3 * L // 4, size=N)
    predict = jax.jit(functools.partial(_predict, model, family, mask_id))
    correct = 0
    for start in range(0, N, batch_size):
        tokens, where = windows_NL[start:start + batch_size], positions[start:start + batch_size]
        guesses = np.asarray(predict(params, jnp.asarray(tokens), jnp.asarray(where)))
        correct += int((guesses == tokens[np.arange(len(tokens)), where]).sum())
    accuracy = correct / N
    hidden = windows_NL[np.arange(N), positions]
    baseline = np.unique(hidden, return_counts=True)[1].max() / N  # always answering the most frequent hidden token
    return {"accuracy": accuracy, "stderr": math.sqrt(accuracy * (1 - accuracy) / N), "n": N,
            "majority_baseline": float(baseline)}
