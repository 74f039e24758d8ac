"""GLUE-style classification by an encoder's fine-tuned classification head (`model.num_labels` > 0, the
encoder family's `head="classify"`): BERT's input `[CLS] text [SEP] (text_pair [SEP])` with segment ids 0 / 1,
the argmax of the head's logits against the label, scored with accuracy, F1 and Matthews correlation
(`metrics.py`). A decoder is scored on the same files by prompt + label words (`eval classify` -> `tasks.py`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from llm_jax.errors import UserError
from llm_jax.eval import formats, metrics
from llm_jax.eval.formats import _jsonl, _need


@functools.partial(jax.jit, static_argnames=("model",))
def _predict(model, params, tokens_BL, types_BL, real_BL):
    logits_BC = model.apply({"params": params}, tokens_BL, token_types_BL=types_BL, padding_BL=real_BL,
                            head="classify")
    return jnp.argmax(logits_BC, axis=-1)


def read_texts(path: str, fmt: str) -> list[dict]:
    """[{"text", "text_pair"?, "label"}]: a GLUE file (`--format sst2` ...) or JSONL with those keys."""
    if fmt in formats.GLUE:
        items, _ = formats.read(path, "choice", fmt)
        return items
    rows = []
    for n, row in _jsonl(path):
        _need(path, n, row, "text", "label")
        if isinstance(row["label"], bool) or not isinstance(row["label"], int):
            raise UserError(f"{path}:{n}: label {row['label']!r} must be an integer class id")
        rows.append(row)
    return rows


def encode(tokenizer, text: str, pair: str | None, seq_len: int) -> tuple[list[int], list[int]]:
    """(token ids, segment ids): [CLS] a [SEP] (b [SEP]) where the vocabulary has them, truncated to seq_len."""
    cls, sep = tokenizer.encode("[CLS]"), tokenizer.encode("[SEP]")
    cls, sep = (cls, sep) if len(cls) == len(sep) == 1 else ([], [])
    a = cls + tokenizer.encode(text) + sep
    b = tokenizer.encode(pair) + sep if pair is not None else []
    ids, types = (a + b)[:seq_len], ([0] * len(a) + [1] * len(b))[:seq_len]
    return ids, types


def classify_with_head(loaded, path: str, fmt: str, limit: int | None, batch_size: int) -> dict:
    cfg = loaded.cfg.model
    if not getattr(cfg, "num_labels", 0):
        raise UserError("eval classify with an encoder uses its classification head: this model has none "
                        "(model.num_labels = 0); fine-tune one first, or score a decoder by label words")
    rows = read_texts(path, fmt)[:limit]
    bad = [r["label"] for r in rows if not 0 <= r["label"] < cfg.num_labels]
    if bad:
        raise UserError(f"{path}: label {bad[0]} is outside the head's {cfg.num_labels} classes")
    L = cfg.seq_len
    predictions = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        tokens, types, real = (np.zeros((batch_size, L), np.int32), np.zeros((batch_size, L), np.int32),
                               np.zeros((batch_size, L), bool))
        for r, row in enumerate(chunk):
            ids, segs = encode(loaded.tokenizer, row["text"], row.get("text_pair"), L)
            tokens[r, :len(ids)], types[r, :len(ids)], real[r, :len(ids)] = ids, segs, True
        real[len(chunk):, 0] = True  # padding rows: one real token so attention has a key
        out = np.asarray(_predict(loaded.model, loaded.params, tokens, types, real))
        predictions += out[:len(chunk)].tolist()
    return metrics.classification_report([r["label"] for r in rows], predictions)
