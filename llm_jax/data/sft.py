"""Fine-tuning data (`train.objective=sft`, `data.sft`): instruction and chat JSON lines -> token rows with a
loss mask, packed.

One record per line, its layout recognised by its fields (`record_layout`):
- prompt / completion: `{"prompt": "...", "completion": "..."}`: plain text, no template;
- chat: `{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}, ...]}`;
- ShareGPT: `{"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}, ...]}` (-> chat);
- Alpaca: `{"instruction": "...", "input": "..." (optional), "output": "..."}` (-> one user turn and the reply).

Chat records are rendered with a chat template (`data.chat_template`: "" = the one beside the tokenizer — a
converted checkpoint's `chat_template.jinja` — else the built-in plain template; "plain"; or a Jinja file). The
assistant's turns are found by rendering prefixes: the text of turn i is what `messages[:i+1]` renders to beyond
`messages[:i]` with the generation prompt (a template for which that is not a prefix is refused, naming it).

Loss mask (`data.loss_mask`): "completion" trains the completion / the assistant's turns only, "all" every token.
Every trained segment ends with the tokenizer's EOS (appended unless the template wrote it), so the model learns
to stop. No BOS is added: a template that wants one writes `{{ bos_token }}`.

Packing (`data.pack`): examples are placed first-fit-decreasing into rows of model.seq_len positions; a row's
`segment_ids` number its examples (1, 2, ...; 0 = padding) and `positions` restart at 0 for each, so with
model.document_mask no example attends to another and each sees the positions it would see alone. Examples
longer than model.seq_len + 1 tokens are cut (counted). Train / validation split by a hash of the record
(data.val_fraction), as for documents.

Preference records (`parse_preferences`, for reward models and DPO): `{"prompt", "chosen", "rejected"}` with
strings or message lists (UltraFeedback-style), or `{"chosen", "rejected"}` full dialogues sharing a prompt
(HH-RLHF's "\\n\\nHuman: ... \\n\\nAssistant: ...").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from llm_jax.data import chat
from llm_jax.data.corpus import CorpusError, split_documents
from llm_jax.data.sources import json_objects
from llm_jax.data.tokenizers import load_tokenizer
from llm_jax.fileio import read_bytes

LAYOUTS = ("prompt_completion", "messages", "sharegpt", "alpaca")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}


class SFTDataError(CorpusError):
    """A fine-tuning or preference file (or its template) that cannot be used; the message names the file."""


# ------------------------------------------------------------------------------------------------ records


def record_layout(record) -> str | None:
    """Which of LAYOUTS a JSON record is (None: none)."""
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("messages"), list):
        return "messages"
    if isinstance(record.get("conversations"), list):
        return "sharegpt"
    if isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        return "prompt_completion"
    if isinstance(record.get("instruction"), str) and isinstance(record.get("output"), str):
        return "alpaca"
    return None


def to_messages(record, layout: str) -> list[dict] | None:
    """The record as chat messages (None for prompt/completion, or a malformed conversation)."""
    if layout == "messages":
        messages = record["messages"]
    elif layout == "sharegpt":
        turns = record["conversations"]
        if not all(isinstance(t, dict) and t.get("from") in SHAREGPT_ROLES for t in turns):
            return None
        messages = [{"role": SHAREGPT_ROLES[t["from"]], "content": t.get("value")} for t in turns]
    elif layout == "alpaca":
        extra = record.get("input") or ""
        user = record["instruction"] + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
    else:
        return None
    ok = all(isinstance(m, dict) and m.get("role") in chat.ROLES and isinstance(m.get("content"), str)
             for m in messages)
    return messages if ok and any(m["role"] == "assistant" for m in messages) else None


def read_records(raw: bytes, path: str, what: str) -> tuple[list[dict], dict]:
    """(JSON objects, counts) of a JSON-lines file (`sources.json_objects`); none at all is an error naming it."""
    records, counts = json_objects(raw)
    if not records:
        raise SFTDataError(f"{what}={path}: no JSON object in {counts['lines']} line(s)")
    return records, counts


# ------------------------------------------------------------------------------------------ rendering


def chat_segments(template: str | None, messages: list[dict], bos: str = "", eos: str = "",
                  tools: list[dict] | None = None) -> list[tuple[str, bool]]:
    """[(text, is_assistant_turn)] whose concatenation is the whole rendered conversation (`tools`: the record's
    OpenAI function specs, shown to the template as at inference)."""
    out, done = [], ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = chat.render(template, messages[:i], bos, eos, add_generation_prompt=True, tools=tools)
        full = chat.render(template, messages[:i + 1], bos, eos, add_generation_prompt=False, tools=tools)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise SFTDataError("the chat template does not render conversations prefix by prefix (messages[:i] "
                               "with the generation prompt must begin messages[:i+1]); the assistant's turns "
                               "cannot be found. Use data.chat_template=plain or a template that does")
        out += [(prefix[len(done):], False), (full[len(prefix):], True)]
        done = full
    rest = chat.render(template, messages, bos, eos, add_generation_prompt=False, tools=tools)[len(done):]
    return [(t, a) for t, a in out + [(rest, False)] if t]


def encode_example(tok, segments: list[tuple[str, bool]], loss_mask: str) -> tuple[list[int], list[float]]:
    """(ids, weight per id) of [(text, trained)]; EOS follows every trained segment unless it ends with it."""
    eos_text = tok.decode([tok.eos_id])
    ids, weights = [], []
    for text, trained in segments:
        piece = tok.encode(text)
        if trained and not (eos_text.strip() and text.rstrip().endswith(eos_text)):
            piece = piece + [tok.eos_id]
        ids += piece
        weights += [1.0 if trained or loss_mask == "all" else 0.0] * len(piece)
    return ids, weights


def example_segments(record, layout: str, template: str | None, tok) -> list[tuple[str, bool]] | None:
    if layout == "prompt_completion":
        return [(record["prompt"], False), (record["completion"], True)]
    messages = to_messages(record, layout)
    if messages is None:
        return None
    tools = record.get("tools") if layout == "messages" and isinstance(record.get("tools"), list) else None
    return chat_segments(template, messages, special_text(tok, "bos"), special_text(tok, "eos"), tools)


# -------------------------------------------------------------------------------------------- rows


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: rows of example indices whose lengths sum to at most `capacity` (ties keep order)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows, room = [], []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return [sorted(r) for r in rows]


class SFTRows:
    """Row i of the packed (or one-per-row) examples: inputs, targets, weights, segment_ids, positions (L each)."""

    def __init__(self, examples: list[tuple[list[int], list[float]]], seq_len: int, packed: bool, pad_id: int):
        self.examples, self.seq_len, self.pad_id = examples, seq_len, pad_id
        lengths = [len(ids) - 1 for ids, _ in examples]  # positions an example occupies (inputs)
        self.rows = pack(lengths, seq_len) if packed else [[i] for i in range(len(examples))]
        self.fill = sum(lengths) / max(1, len(self.rows) * seq_len)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        L = self.seq_len
        out = {"inputs": np.full(L, self.pad_id, np.int32), "targets": np.full(L, self.pad_id, np.int32),
               "weights": np.zeros(L, np.float32), "segment_ids": np.zeros(L, np.int32),
               "positions": np.zeros(L, np.int32)}
        at = 0
        for segment, e in enumerate(self.rows[int(i)], start=1):
            ids, weights = self.examples[e]
            n = len(ids) - 1
            out["inputs"][at:at + n], out["targets"][at:at + n] = ids[:-1], ids[1:]
            out["weights"][at:at + n] = weights[1:]
            out["segment_ids"][at:at + n], out["positions"][at:at + n] = segment, np.arange(n)
            at += n
        return out


@dataclasses.dataclass
class SFTData:
    tokenizer: object
    train: SFTRows
    val: SFTRows
    chat_template: str | None  # the template the chat records were rendered with (None: built-in / unused)
    manifest: dict
    fingerprint: str


def source_dir(cfg) -> str | None:
    """Where the run's tokenizer (and chat template) come from: data.tokenizer's directory, else the work
    directory of checkpoint.restore_from (a `.../checkpoints/<step>` path counts as its work directory)."""
    if cfg.data.tokenizer:
        path = cfg.data.tokenizer
        return path if os.path.isdir(path) else os.path.dirname(path)
    path = os.path.normpath(cfg.checkpoint.restore_from) if cfg.checkpoint.restore_from else ""
    if path and os.path.basename(os.path.dirname(path)) == "checkpoints":
        return os.path.dirname(os.path.dirname(path))
    return path or None


def resolve_template(cfg, where: str | None) -> str | None:
    spec = cfg.data.chat_template
    if spec == "plain":
        return None
    if spec:
        return read_bytes(spec, "chat template (data.chat_template)").decode("utf-8")
    return chat.load_chat_template(where) if where and os.path.isdir(where) else None


def _unigram_entropy(examples, vocab_size: int) -> float:
    counts = np.zeros(vocab_size, np.int64)
    for ids, weights in examples:
        trained = np.asarray(ids[1:])[np.asarray(weights[1:]) > 0]
        np.add.at(counts, trained, 1)
    p = counts[counts > 0] / max(1, counts.sum())
    return float(-(p * np.log(p)).sum())


def tokenizer_and_template(cfg):
    """(tokenizer, chat template or None) of the model a fine-tuning run starts from (`source_dir`), checked: it
    has an EOS (every trained turn ends with one) and fits model.vocab_size."""
    where = source_dir(cfg)
    if where is None:
        raise SFTDataError(f"train.objective={cfg.train.objective} needs a tokenizer: set checkpoint.restore_from "
                           f"(the model to start from; its tokenizer is used) or data.tokenizer")
    tok = load_tokenizer(cfg.data.tokenizer or where)
    if tok.eos_id is None:
        raise SFTDataError(f"the tokenizer of {where} has no EOS id; fine-tuned turns end with one")
    if tok.vocab_size > cfg.model.vocab_size:
        raise SFTDataError(f"the tokenizer of {where} has {tok.vocab_size} tokens, more than "
                           f"model.vocab_size={cfg.model.vocab_size}")
    return tok, resolve_template(cfg, where)


def special_text(tok, name: str) -> str:
    """The text of the tokenizer's special token `name` ("bos", "eos"), "" if it has none: what a template gets."""
    return tok.decode([tok.special[name]]) if name in tok.special else ""


def load_sft(cfg, log=print) -> SFTData:
    """The fine-tuning rows of `cfg.data.sft` (see the module docstring)."""
    path, d, L = cfg.data.sft, cfg.data, cfg.model.seq_len
    tok, template = tokenizer_and_template(cfg)
    raw = read_bytes(path, "fine-tuning data (data.sft)")
    records, counts = read_records(raw, path, "data.sft")
    counts.update({layout: 0 for layout in LAYOUTS}, unusable=0, truncated=0, no_target=0)
    keyed = {}
    for record in records:
        layout = record_layout(record)
        segments = example_segments(record, layout, template, tok) if layout else None
        if segments is None:
            counts["unusable"] += 1
            continue
        counts[layout] += 1
        keyed[json.dumps(record, sort_keys=True)] = segments
    if not keyed:
        raise SFTDataError(f"data.sft={path}: no usable record in {counts['lines']} line(s) (layouts: "
                           f"{', '.join(LAYOUTS)}; a chat needs an assistant turn)")
    train_keys, val_keys = split_documents(list(keyed), d.val_fraction)

    def examples(keys):
        out = []
        for key in keys:
            ids, weights = encode_example(tok, keyed[key], d.loss_mask)
            if len(ids) > L + 1:
                counts["truncated"] += 1
                ids, weights = ids[:L + 1], weights[:L + 1]
            if sum(weights[1:]) == 0:
                counts["no_target"] += 1
                continue
            out.append((ids, weights))
        return out

    pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
    train, val = SFTRows(examples(train_keys), L, d.pack, pad), SFTRows(examples(val_keys), L, d.pack, pad)
    if not len(train) or not len(val):
        raise SFTDataError(f"data.sft={path}: {len(train.examples)} train / {len(val.examples)} validation "
                           f"examples; both splits need one (data.val_fraction={d.val_fraction}; "
                           f"{counts['no_target']} example(s) had no trained token left after cutting them to "
                           f"model.seq_len + 1 = {L + 1} tokens)")
    counts.update(train=len(train.examples), val=len(val.examples), train_rows=len(train), val_rows=len(val))
    skipped = counts["not_json"] + counts["unusable"] + counts["no_target"]
    layouts = ", ".join(f"{counts[k]} {k}" for k in LAYOUTS if counts[k])
    source = "the tokenizer's directory" if template and not d.chat_template else d.chat_template or "plain"
    log(f"data: {len(train.examples):,} train / {len(val.examples):,} validation examples from {path} ({layouts})"
        + (f"; {skipped} skipped" if skipped else "")
        + (f"; {counts['truncated']} cut to {L + 1} tokens" if counts["truncated"] else "")
        + f" | {len(train):,} rows of {L} ({100 * train.fill:.0f}% filled{', packed' if d.pack else ''})"
        + f" | loss on {'the completions' if d.loss_mask == 'completion' else 'every token'} | template: {source}")
    settings = {"file": hashlib.sha256(raw).hexdigest(), "tokenizer": tok.kind, "vocab": tok.vocab_size,
                "template": hashlib.sha256((template or "").encode()).hexdigest(), "loss_mask": d.loss_mask,
                "pack": d.pack, "seq_len": L, "val_fraction": d.val_fraction, "seed": cfg.train.seed}
    manifest = {"tokenizer": {"kind": tok.kind, "vocab_size": tok.vocab_size}, "counts": counts,
                "unigram_entropy": _unigram_entropy(train.examples, cfg.model.vocab_size)}
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return SFTData(tok, train, val, template, manifest, fingerprint)


# ------------------------------------------------------------------------------------------ preferences


def _common_prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def preference_triple(record) -> tuple | None:
    """(prompt, chosen, rejected) of a preference record: three strings, or (prompt messages, chosen reply,
    rejected reply) for message lists; None if the record is not one."""
    chosen, rejected, prompt = record.get("chosen"), record.get("rejected"), record.get("prompt")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if isinstance(prompt, str):
            return prompt, chosen, rejected
        if prompt is None:  # HH-RLHF: two whole dialogues; the prompt ends with the last shared "Assistant:"
            cut = chosen[:_common_prefix(chosen, rejected)].rfind("\n\nAssistant:")
            if cut < 0:
                return None
            cut += len("\n\nAssistant:")
            return chosen[:cut], chosen[cut:], rejected[cut:]
        return None
    if isinstance(chosen, list) and isinstance(rejected, list):
        usable = lambda ms: all(isinstance(m, dict) and m.get("role") in chat.ROLES  # noqa: E731
                                and isinstance(m.get("content"), str) for m in ms)
        if isinstance(prompt, str):  # UltraFeedback-binarized repeats the prompt as the first message
            n = 0
        else:
            n = _common_prefix(chosen, rejected)
        if not (usable(chosen) and usable(rejected)) or n >= min(len(chosen), len(rejected)):
            return None
        shared = chosen[:n] if n else [{"role": "user", "content": prompt}] if isinstance(prompt, str) else []
        c, r = chosen[n:], rejected[n:]
        if isinstance(prompt, str) and c and c[0].get("role") == "user":
            shared, c, r = c[:1], c[1:], r[1:]
        if len(c) != 1 or len(r) != 1 or c[0]["role"] != "assistant" or r[0]["role"] != "assistant" or not shared:
            return None
        return shared, c[0]["content"], r[0]["content"]
    return None


def parse_preferences(raw: bytes, path: str) -> tuple[list[tuple], dict]:
    """(triples, counts) of a preference JSON-lines file; records that are not preferences are counted."""
    records, counts = read_records(raw, path, "preference data")
    triples = [t for t in map(preference_triple, records) if t is not None]
    counts.update(unusable=len(records) - len(triples), pairs=len(triples))
    if not triples:
        raise SFTDataError(f"{path}: no preference record (prompt, chosen, rejected) in {counts['lines']} line(s)")
    return triples, counts
