"""Preference pairs as rows (`data.preferences`, for `train.objective=reward` and `dpo`).

Each record of the JSON-lines file is a (prompt, chosen, rejected) triple (`sft.preference_triple`: plain strings,
UltraFeedback-style message lists, or HH-RLHF's two dialogues). Both replies are encoded as fine-tuning examples
of the same prompt (`sft.encode_example`: a message prompt through the chat template and the reply as the
assistant's turn, a string prompt as plain text; the reply and its EOS are the trained tokens), one pair per row:

  chosen_inputs / chosen_targets / chosen_weights, rejected_* (model.seq_len each; weights 1 on the reply),
  weights (1,): 1 for a real pair (the train step averages the pair losses over them).

A pair longer than model.seq_len + 1 tokens is cut from the end (counted); a pair left with no reply token on
either side is dropped (counted). Split into train / validation by a hash of the record, as for documents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np

from llm_jax.data import sft
from llm_jax.data.corpus import split_documents
from llm_jax.fileio import read_bytes

SIDES = ("chosen", "rejected")


def pair_segments(triple, template, tok) -> dict[str, list[tuple[str, bool]]]:
    """{side: [(text, trained)]} of a (prompt, chosen, rejected) triple."""
    prompt, *replies = triple
    out = {}
    for side, reply in zip(SIDES, replies):
        if isinstance(prompt, str):
            out[side] = [(prompt, False), (reply, True)]
        else:
            out[side] = sft.example_segments({"messages": prompt + [{"role": "assistant", "content": reply}]},
                                             "messages", template, tok)
    return out


class PreferenceRows:
    """Row i: pair i's two sides as (inputs, targets, weights) of seq_len, and weights (1,)."""

    def __init__(self, pairs: list[dict[str, tuple[list[int], list[float]]]], seq_len: int, pad_id: int):
        self.pairs, self.seq_len, self.pad_id = pairs, seq_len, pad_id
        self.extra: dict[str, np.ndarray] = {}  # per-row scalars added later (DPO's reference log-probabilities)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        L, out = self.seq_len, {"weights": np.ones(1, np.float32)}
        out |= {name: values[int(i)][None] for name, values in self.extra.items()}
        for side, (ids, weights) in self.pairs[int(i)].items():
            n = len(ids) - 1
            inputs, targets = np.full(L, self.pad_id, np.int32), np.full(L, self.pad_id, np.int32)
            w = np.zeros(L, np.float32)
            inputs[:n], targets[:n], w[:n] = ids[:-1], ids[1:], weights[1:]
            out |= {f"{side}_inputs": inputs, f"{side}_targets": targets, f"{side}_weights": w}
        return out


def pair_rows(triples, tok, template, seq_len: int, counts: dict | None = None) -> PreferenceRows:
    """The rows of (prompt, chosen, rejected) triples; `counts` gets `truncated` sides and `no_reply` pairs
    (dropped: a side with no reply token within seq_len + 1 tokens)."""
    counts = {"truncated": 0, "no_reply": 0} if counts is None else counts
    pairs = []
    for triple in triples:
        pair = {}
        for side, segments in pair_segments(triple, template, tok).items():
            ids, weights = sft.encode_example(tok, segments, "completion")
            if len(ids) > seq_len + 1:
                counts["truncated"] += 1
                ids, weights = ids[:seq_len + 1], weights[:seq_len + 1]
            pair[side] = (ids, weights)
        if all(sum(w[1:]) > 0 for _, w in pair.values()):
            pairs.append(pair)
        else:
            counts["no_reply"] += 1
    return PreferenceRows(pairs, seq_len, tok.pad_id if tok.pad_id is not None else tok.eos_id)


@dataclasses.dataclass
class PreferenceData:
    tokenizer: object
    train: PreferenceRows
    val: PreferenceRows
    chat_template: str | None
    manifest: dict
    fingerprint: str


def load_preferences(cfg, log=print) -> PreferenceData:
    """The preference rows of `cfg.data.preferences`, with the tokenizer and chat template of the model to train
    (`sft.tokenizer_and_template`: data.tokenizer, else checkpoint.restore_from)."""
    path, L = cfg.data.preferences, cfg.model.seq_len
    tok, template = sft.tokenizer_and_template(cfg)
    raw = read_bytes(path, "preference data (data.preferences)")
    triples, counts = sft.parse_preferences(raw, path)
    keyed = {json.dumps(t, sort_keys=True): t for t in triples}
    train_keys, val_keys = split_documents(list(keyed), cfg.data.val_fraction)
    counts.update(truncated=0, no_reply=0)
    rows = lambda keys: pair_rows([keyed[k] for k in keys], tok, template, L, counts)  # noqa: E731
    train, val = rows(train_keys), rows(val_keys)
    if not len(train) or not len(val):
        raise sft.SFTDataError(f"data.preferences={path}: {len(train)} train / {len(val)} validation pairs; both "
                               f"splits need one ({counts['no_reply']} pair(s) had no reply token within "
                               f"model.seq_len + 1 = {L + 1} tokens)")
    counts.update(train=len(train), val=len(val))
    log(f"data: {len(train):,} train / {len(val):,} validation preference pairs from {path}"
        + (f"; {counts['unusable'] + counts['not_json']} skipped" if counts["unusable"] + counts["not_json"] else "")
        + (f"; {counts['truncated']} side(s) cut to {L + 1} tokens" if counts["truncated"] else ""))
    settings = {"file": hashlib.sha256(raw).hexdigest(), "tokenizer": tok.kind, "vocab": tok.vocab_size,
                "template": hashlib.sha256((template or "").encode()).hexdigest(), "seq_len": L,
                "val_fraction": cfg.data.val_fraction, "seed": cfg.train.seed}
    manifest = {"tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size}, "counts": counts,
                "unigram_entropy": math.log(2)}  # the pairwise losses' chance level, where the loop prints entropy
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return PreferenceData(tok, train, val, template, manifest, fingerprint)
