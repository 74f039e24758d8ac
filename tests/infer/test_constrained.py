"""JSON-schema-constrained generation: whatever the model's logits, a completed generation parses and validates."""

import json

import numpy as np
import pytest

pytest.importorskip("outlines_core", reason="the `tools` extra (outlines-core) is not installed")
jsonschema = pytest.importorskip("jsonschema", reason="the `tools` extra (jsonschema) is not installed")

from llm_jax.data.corpus import shakespeare_scenes  # noqa: E402
from llm_jax.data.tokenizers import train_tokenizer  # noqa: E402
from llm_jax.infer.constrained import JsonConstraint, check_schema, constrained_generate  # noqa: E402

CALCULATOR = {"type": "object", "required": ["name", "arguments"], "properties": {
    "name": {"enum": ["calculator", "search"]},
    "arguments": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}
SCALARS = {"type": "object", "required": ["count", "ok"], "properties": {
    "count": {"type": "integer"}, "ratio": {"type": "number"}, "ok": {"type": "boolean"},
    "note": {"type": ["string", "null"], "maxLength": 12}}}
NESTED = {"type": "object", "required": ["user", "mode"], "properties": {
    "user": {"type": "object", "required": ["name", "age"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12}, "age": {"type": "integer"},
        "admin": {"type": "boolean"}}},
    "mode": {"const": "fast"}}}
ARRAYS = {"type": "object", "required": ["values"], "properties": {
    "values": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 4},
    "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}}}}
POINTS = {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/point"},
          "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                              "required": ["x", "y"]}}}
OPTIONAL = {"type": "object", "properties": {"query": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
                                             "limit": {"type": "integer"}}}
SCHEMAS = {"calculator": CALCULATOR, "scalars": SCALARS, "nested": NESTED, "arrays": ARRAYS, "points": POINTS,
           "optional": OPTIONAL}
EXAMPLES = [{"name": "calculator", "arguments": {"expression": "2 * (3 + 4.5)"}},
            {"name": "search", "arguments": {"query": "weather in Verona", "limit": 3}},
            {"count": -12, "ratio": 0.25, "ok": True, "note": None, "values": [1.5, 2e3], "tags": ["a", "b"]},
            {"user": {"name": "Juliet", "age": 13, "admin": False}, "mode": "fast", "points": [{"x": 1, "y": 2}]}]


@pytest.fixture(scope="module")
def docs():
    return [s[:4000] for s in shakespeare_scenes()[:5]] + [json.dumps(e) for e in EXAMPLES] * 10 + \
        [json.dumps(e, indent=1) for e in EXAMPLES] * 5


@pytest.fixture(scope="module")
def tok(docs, tmp_path_factory):
    return train_tokenizer("bytelevel_bpe", docs, 300, str(tmp_path_factory.mktemp("bpe")))


def validates(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def stressed_logits(tok, rng, kind: int):
    """Random normal logits, some draws strongly favouring EOS, quotes, brackets, blanks or digits."""
    favour = [b"", b"", b'"', b"{}[]", b" \n", b"0123456789"][kind % 6]
    boost_V = np.zeros(tok.vocab_size)
    for i in range(tok.vocab_size):
        piece = tok.decode_bytes([i]) if i != tok.eos_id else b""
        boost_V[i] = 6.0 if any(c in favour for c in piece) or i == tok.eos_id and kind % 6 == 1 else 0.0
    return lambda prefix_ids: rng.normal(size=tok.vocab_size) + boost_V


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_completed_generations_parse_and_validate_and_eos_waits_for_completion(tok, name):
    schema, draws = SCHEMAS[name], 40
    check_schema(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    constraint = JsonConstraint(schema, tok)
    rng = np.random.default_rng(sorted(SCHEMAS).index(name))
    completed = 0
    for draw in range(draws):
        temperature = 0.0 if draw % 7 == 3 else 1.0
        ids, text = constrained_generate(stressed_logits(tok, rng, draw), constraint, 1500, rng, temperature)
        state = constraint.start_state()
        for k, token in enumerate(ids):  # every prefix: EOS allowed exactly when the JSON so far is complete
            mask_V = constraint.allowed(state)
            assert mask_V[token]
            assert mask_V[tok.eos_id] == constraint.is_complete(state) == validates(constraint.text(ids[:k]), schema)
            state = constraint.advance(state, token)
        if ids and ids[-1] == tok.eos_id:
            completed += 1
            assert validates(text, schema), text
            assert text == tok.decode(ids[:-1])
        else:
            assert len(ids) == 1500 and not validates(text, schema)
    assert completed >= 0.8 * draws, f"{completed}/{draws} completed"


def test_eos_favoured_greedy_stops_at_the_first_complete_document(tok):
    rng = np.random.default_rng(0)
    eos_V = np.zeros(tok.vocab_size)
    eos_V[tok.eos_id] = 1e3
    for schema in SCHEMAS.values():
        constraint = JsonConstraint(schema, tok)
        ids, text = constrained_generate(lambda prefix: rng.normal(size=tok.vocab_size) + eos_V, constraint, 1500,
                                         rng, 0.0)
        assert ids[-1] == tok.eos_id and validates(text, schema)
        assert tok.eos_id not in ids[:-1]


def test_padded_model_vocabulary_and_forced_tokens(tok):
    constraint = JsonConstraint(CALCULATOR, tok)
    calls = []

    def logits_fn(prefix_ids):
        calls.append(len(prefix_ids))
        logits_V = np.random.default_rng(len(prefix_ids)).normal(size=tok.vocab_size + 20)
        logits_V[tok.vocab_size:] = 1e6  # padding rows past the tokenizer's vocabulary: never picked
        return logits_V

    ids, text = constrained_generate(logits_fn, constraint, 800, np.random.default_rng(1))
    assert validates(text, CALCULATOR) and max(ids) < tok.vocab_size
    assert len(calls) < len(ids)  # '{"name"' etc. are forced: the model is not asked
    again, _ = constrained_generate(logits_fn, constraint, 800, np.random.default_rng(1))
    assert again == ids


@pytest.mark.parametrize("schema, named", [
    ({"type": "integer", "multipleOf": 3}, "multipleOf"),
    ({"type": "integer", "minimum": 0}, "minimum"),
    ({"type": "string", "pattern": "a+"}, "pattern"),
    ({"type": "string", "format": "email"}, "format"),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "oneOf"),
    ({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "required"),
    ({"type": "string", "anyOf": [{"type": "integer"}]}, "anyOf"),
    ({"type": "string", "enum": ["a", 1]}, "enum"),
    ({"type": "array", "items": [{"type": "integer"}]}, "items"),
    ({"type": "date"}, "date"),
    ({"not": {"type": "string"}}, "not"),
    (True, "schema"),
])
def test_unsupported_schema_features_raise_value_error_naming_them(tok, schema, named):
    with pytest.raises(ValueError, match=named):
        JsonConstraint(schema, tok)


def test_refusals_never_silent(tok, docs, tmp_path):
    constraint = JsonConstraint(CALCULATOR, tok)
    start = constraint.start_state()
    with pytest.raises(ValueError, match="not allowed"):
        constraint.advance(start, tok.eos_id)  # EOS before the JSON is complete
    with pytest.raises(ValueError, match="not allowed"):
        constraint.advance(start, tok.encode("}")[0])
    dead_V = np.full(tok.vocab_size, -np.inf)
    with pytest.raises(ValueError, match="-inf"):
        constrained_generate(lambda prefix: dead_V, constraint, 50, np.random.default_rng(0))
    no_braces = train_tokenizer("char", ["hello world"], 50, str(tmp_path / "char"))
    with pytest.raises(ValueError, match="incompatible"):
        JsonConstraint(CALCULATOR, no_braces)  # the vocabulary cannot spell '{'
    wordpiece = train_tokenizer("wordpiece", docs, 500, str(tmp_path / "wp"))
    with pytest.raises(ValueError, match="token by token"):
        JsonConstraint(CALCULATOR, wordpiece)


@pytest.mark.parametrize("kind", ["sentencepiece_bpe", "char"])
def test_other_tokenizers(docs, tmp_path, kind):
    other = train_tokenizer(kind, docs, 500, str(tmp_path))
    rng = np.random.default_rng(2)
    for schema in (CALCULATOR, NESTED):
        constraint = JsonConstraint(schema, other)
        for _ in range(10):
            ids, text = constrained_generate(lambda p: rng.normal(size=other.vocab_size), constraint, 2000, rng)
            assert ids[-1] == other.eos_id and validates(text, schema), text
            assert other.decode(ids[:-1]) == text
