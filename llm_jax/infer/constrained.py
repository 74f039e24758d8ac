"""Generation constrained to JSON that matches a JSON schema (tool calls, function arguments): at each step the
logits of every token that cannot continue a valid document are set to -inf, and EOS is allowed exactly when the
document is complete.

The engine is `outlines-core` (the `tools` extra): the schema becomes a regular expression
(`build_regex_from_schema`), and that regex an index from automaton states to the tokens that keep a match
possible, computed once over the tokenizer's vocabulary given as each token's exact bytes (a byte-level BPE token
may be part of a UTF-8 character). `check_schema` admits only the keywords outlines-core enforces faithfully,
so that every completed generation validates against the schema; any other keyword is a ValueError naming it.
"""

from __future__ import annotations

import json
from typing import Callable, Sequence

import numpy as np

# Keywords that constrain nothing: allowed anywhere, ignored.
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
                         "readOnly", "writeOnly"})
# Keywords outlines-core enforces exactly (or more strictly: an object never gets properties beyond `properties`).
SUPPORTED = frozenset({"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
                       "minLength", "maxLength", "enum", "const", "anyOf", "$ref", "$defs", "definitions"})
# These replace the rest of their schema in outlines-core, so they must stand alone (`enum`/`const` beside `type`).
ALONE = ("$ref", "anyOf", "enum", "const")
TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None),
         "object": dict, "array": list}
SHAPES = {"properties": dict, "$defs": dict, "definitions": dict, "required": list, "anyOf": list, "enum": list}
WORD_KINDS = ("wordpiece", "word")  # decode joins words with spaces: the text is not the tokens' concatenation
DEFAULT_WHITESPACE = r"[ ]?"  # at most one space between tokens of the JSON: generation cannot ramble in blanks


def _of_type(value, name: str) -> bool:
    return isinstance(value, TYPES[name]) and not (isinstance(value, bool) and name in ("integer", "number"))


def check_schema(schema, where: str = "schema") -> None:
    """Raises ValueError naming the first keyword or structure outside the supported subset (see SUPPORTED)."""
    if not isinstance(schema, dict):
        raise ValueError(f"{where}: a schema must be a JSON object, not {json.dumps(schema)[:40]}")
    for key in schema:
        if key not in SUPPORTED and key not in ANNOTATIONS:
            raise ValueError(f"{where}: JSON schema keyword {key!r} is not supported by constrained generation")
        if not isinstance(schema[key], SHAPES.get(key, object)):
            kind = "object" if SHAPES[key] is dict else "array"
            raise ValueError(f"{where}: {key!r} must be a JSON {kind}, not {schema[key]!r}"[:200])
    checks = set(schema) - ANNOTATIONS - {"$defs", "definitions"}
    for key in ALONE:
        if key in schema and checks - {key} - ({"type"} if key in ("enum", "const") else set()):
            others = ", ".join(sorted(checks - {key, "type"}))
            raise ValueError(f"{where}: {key!r} cannot be combined with {others} in constrained generation")
    types = schema.get("type", [])
    for t in [types] if isinstance(types, str) else types:
        if t not in TYPES:
            raise ValueError(f"{where}: type {t!r} is not supported by constrained generation")
        for v in schema.get("enum", []) + ([schema["const"]] if "const" in schema else []):
            if not isinstance(types, str) or not _of_type(v, t):
                raise ValueError(f"{where}: enum/const value {v!r} is not of type {types!r}")
    if "items" in schema and not isinstance(schema["items"], dict):
        raise ValueError(f"{where}.items: only a single schema for every item is supported")
    properties = schema.get("properties", {})
    missing = [name for name in schema.get("required", []) if name not in properties]
    if missing:
        raise ValueError(f"{where}: required {missing} must be listed in properties")
    extra = schema.get("additionalProperties", False)
    subschemas = [(f"{where}.properties.{k}", s) for k, s in properties.items()]
    subschemas += [(f"{where}.anyOf[{i}]", s) for i, s in enumerate(schema.get("anyOf", []))]
    subschemas += [(f"{where}.{d}.{k}", s) for d in ("$defs", "definitions") for k, s in schema.get(d, {}).items()]
    subschemas += [(f"{where}.items", schema["items"])] if "items" in schema else []
    subschemas += [(f"{where}.additionalProperties", extra)] if not isinstance(extra, bool) else []
    for path, sub in subschemas:
        check_schema(sub, path)


def token_bytes(tokenizer) -> list[bytes | None]:
    """Each id's exact bytes, None for the special ids and tokens no text can be built from. Byte-level BPE
    gives them directly (`decode_bytes`); other tokenizers are read through `decode` after an anchor token (so
    sentencepiece's word-start space survives), and a token that decodes to U+FFFD (part of a character) is left
    out: they can be spelled with whole-character tokens instead."""
    special = set(tokenizer.special.values())
    if hasattr(tokenizer, "decode_bytes"):
        return [None if i in special else tokenizer.decode_bytes([i]) for i in range(tokenizer.vocab_size)]
    anchor = tokenizer.encode("a")[:1]
    head = tokenizer.decode(anchor)
    out = []
    for i in range(tokenizer.vocab_size):
        text = tokenizer.decode(anchor + [i])
        ok = i not in special and text.startswith(head) and "\ufffd" not in text and len(text) > len(head)
        out.append(text[len(head):].encode("utf-8") if ok else None)
    return out


class JsonConstraint:
    """Which tokens may come next while generating JSON that matches `schema`. States are outlines-core index
    states (ints): `start_state()`, `allowed(state)`, `advance(state, token_id)`, `is_complete(state)`."""

    def __init__(self, schema: dict, tokenizer, whitespace: str = DEFAULT_WHITESPACE):
        try:
            from outlines_core import Index, Vocabulary
            from outlines_core.json_schema import build_regex_from_schema
        except ImportError as e:
            raise ImportError("constrained generation needs outlines-core: pip install 'llm_jax[tools]'") from e
        check_schema(schema)
        if tokenizer.kind in WORD_KINDS:
            raise ValueError(f"constrained generation needs a tokenizer that decodes token by token; a "
                             f"{tokenizer.kind} tokenizer re-spaces words when decoding")
        if tokenizer.eos_id is None:
            raise ValueError("constrained generation needs a tokenizer with an EOS token (it ends the JSON)")
        self.schema, self.tokenizer, self.eos_id = schema, tokenizer, tokenizer.eos_id
        self.vocab_size = tokenizer.vocab_size
        self.pieces = token_bytes(tokenizer)
        by_bytes: dict[bytes, list[int]] = {}
        for i, piece in enumerate(self.pieces):
            if piece:
                by_bytes.setdefault(piece, []).append(i)
        try:
            self.regex = build_regex_from_schema(json.dumps(schema), whitespace)
            self.index = Index(self.regex, Vocabulary(self.eos_id, by_bytes))
        except ValueError as e:  # outlines-core's own refusals, and a vocabulary that cannot spell the JSON
            raise ValueError(f"cannot constrain generation to this schema: {e}") from e
        self._masks: dict[int, np.ndarray] = {}

    def start_state(self) -> int:
        return self.index.get_initial_state()

    def is_complete(self, state: int) -> bool:
        return self.index.is_final_state(state)

    def allowed(self, state: int) -> np.ndarray:
        """mask_V (bool, the tokenizer's vocab_size): the tokens that keep the JSON valid; EOS exactly when it
        is complete. Raises RuntimeError for a state no token can leave (never reached from start_state)."""
        mask_V = self._masks.get(state)
        if mask_V is None:
            mask_V = np.zeros(self.vocab_size, bool)
            mask_V[[i for i in self.index.get_allowed_tokens(state) or () if i < self.vocab_size]] = True
            mask_V[self.eos_id] = self.is_complete(state)
            if not mask_V.any():
                raise RuntimeError(f"constrained generation: no token can continue from state {state}")
            self._masks[state] = mask_V
        return mask_V

    def advance(self, state: int, token_id: int) -> int:
        """The state after `token_id`; ValueError if the token is not allowed. EOS keeps a complete state."""
        token_id = int(token_id)
        if token_id == self.eos_id and self.is_complete(state):
            return state
        nxt = self.index.get_next_state(state, token_id) if token_id != self.eos_id else None
        if nxt is None:
            piece = self.pieces[token_id] if 0 <= token_id < self.vocab_size else "out of the vocabulary"
            raise ValueError(f"token {token_id} ({piece!r}) is not allowed in state {state}")
        return nxt

    def text(self, ids: Sequence[int]) -> str:
        """The JSON text of `ids` (EOS dropped), from the token bytes the constraint checked."""
        return b"".join(self.pieces[i] for i in ids if i != self.eos_id).decode("utf-8", errors="replace")


def pick_token(logits_V: np.ndarray, mask_V: np.ndarray, rng: np.random.Generator, temperature: float) -> int:
    """Greedy (temperature 0) or sampled among the allowed tokens; logits past the mask (a padded model vocabulary)
    are never picked."""
    logits_V = np.asarray(logits_V, np.float64)
    if logits_V.shape[-1] < mask_V.shape[0]:
        raise ValueError(f"logits cover {logits_V.shape[-1]} tokens, the tokenizer has {mask_V.shape[0]}")
    masked_V = np.full(logits_V.shape[-1], -np.inf)
    masked_V[:mask_V.shape[0]] = np.where(mask_V, logits_V[:mask_V.shape[0]], -np.inf)
    best = masked_V.max()
    if not np.isfinite(best):
        raise ValueError("constrained generation: the model gives every allowed token a -inf or NaN logit")
    if temperature == 0.0:
        return int(np.argmax(masked_V))
    probs_V = np.exp((masked_V - best) / temperature)
    return int(rng.choice(probs_V.shape[0], p=probs_V / probs_V.sum()))


def constrained_generate(logits_fn: Callable[[list[int]], np.ndarray], constraint: JsonConstraint, max_tokens: int,
                         rng: np.random.Generator, temperature: float = 1.0) -> tuple[list[int], str]:
    """Up to `max_tokens` tokens, each chosen among `constraint.allowed` from `logits_fn(prefix_ids) -> logits_V`.
    Returns (token_ids, text): token_ids end with EOS exactly when the JSON was completed (then `text` parses
    and matches the schema); otherwise `text` is a valid prefix cut at `max_tokens`. A token forced by the
    constraint (the only one allowed) is taken without calling the model."""
    state, ids = constraint.start_state(), []
    for _ in range(max_tokens):
        mask_V = constraint.allowed(state)
        forced = np.flatnonzero(mask_V)
        token = int(forced[0]) if forced.shape[0] == 1 else pick_token(logits_fn(ids), mask_V, rng, temperature)
        state = constraint.advance(state, token)
        ids.append(token)
        if token == constraint.eos_id:
            break
    return ids, constraint.text(ids)
