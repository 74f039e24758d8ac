"""The shipped tools: `calculator` (arithmetic, evaluated from the expression's syntax tree: no `eval`, bounded
sizes) and `corpus_search` (top-k passages of a RAG index, `llm-jax rag index`)."""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import os
from typing import Callable

from llm_jax.errors import UserError
from llm_jax.infer.load import load_workdir
from llm_jax.infer.toolcall import openai_spec
from llm_jax.rag import index as index_lib
from llm_jax.rag.ask import retrieve
from llm_jax.rag.embed import Embedder


class ToolError(Exception):
    """A tool refusing its arguments; the message goes back to the model as the tool's result."""


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict                 # the JSON schema of the arguments (an object)
    run: Callable[..., str]          # run(**arguments) -> the result text; ToolError for bad arguments

    def spec(self) -> dict:
        """The OpenAI function spec the chat template and the constraint see."""
        return openai_spec({"name": self.name, "description": self.description, "parameters": self.parameters})


MAX_EXPRESSION = 200
MAX_MAGNITUDE = 1e15
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _value(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        a, b = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 1e6):
            raise ToolError("the power is too large (exponent at most 64, base at most 1e6)")
        try:
            out = OPERATORS[type(node.op)](a, b)
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        if isinstance(out, complex) or (isinstance(out, float) and not math.isfinite(out)) \
                or abs(out) > MAX_MAGNITUDE:
            raise ToolError(f"the result is out of range (|x| <= {MAX_MAGNITUDE:g})")
        return out
    raise ToolError("only numbers, + - * / // % ** and parentheses are allowed")


def calculate(expression: str) -> str:
    """The value of an arithmetic expression as text (an integral result without a decimal point)."""
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None
    value = _value(tree.body)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value) if isinstance(value, int) else f"{value:.10g}"


CALCULATOR = Tool("calculator", "Evaluates an arithmetic expression with + - * / // % ** and parentheses.",
                  {"type": "object", "properties": {"expression": {"type": "string", "maxLength": MAX_EXPRESSION}},
                   "required": ["expression"]},
                  calculate)


def corpus_search(index_dir: str, embedder_dir: str | None = None, k: int = 3, chars: int = 400) -> Tool:
    """A tool returning the top-k passages of the RAG index `index_dir` for a query, numbered, with their titles
    (the embedding model: `embedder_dir`, default the work directory the index was built with)."""
    index = index_lib.load(index_dir)
    embedder_dir = embedder_dir or index.embedder["workdir"]
    if not os.path.isdir(embedder_dir):
        raise UserError(f"the index's embedding model {embedder_dir!r} is gone: give the work directory holding it")
    embedder = Embedder(load_workdir(embedder_dir), embedder_dir, pooling=index.embedder["pooling"],
                        max_tokens=index.embedder["max_tokens"])

    def search(query: str) -> str:
        if not query.strip():
            raise ToolError("the query is empty")
        hits = retrieve(index, embedder, [query], k)[0]
        return "\n".join(f"[{i}] {chunk.title}: {chunk.text[:chars]}" for i, (chunk, _) in enumerate(hits, 1))

    return Tool("corpus_search", "Searches the document collection; returns the most relevant passages.",
                {"type": "object", "properties": {"query": {"type": "string", "maxLength": 300}},
                 "required": ["query"]}, search)
