"""Imports flow one way between the packages (docs/core.md draws the picture): every `llm_jax` import, at module
level or inside a function, must be an edge this table allows."""

import ast
import os

from helpers import REPO

BASE = {"errors"}
ALLOWED = {  # package -> the packages it may import
    "errors": set(), "argtypes": set(), "hardware": set(), "allocator": set(), "fileio": BASE, "config": BASE,
    "parallel": BASE | {"config"},
    "models": BASE | {"config", "parallel"},
    "objectives": BASE | {"config"},
    "checkpoint": BASE | {"fileio", "parallel"},
    "data": BASE | {"fileio", "config", "parallel"},
    "train": BASE | {"fileio", "config", "parallel", "models", "objectives", "checkpoint", "data", "hardware",
              "allocator", "infer"},  # policy optimisation samples its rollouts with the inference decoder
    "infer": BASE | {"fileio", "config", "parallel", "models", "objectives", "checkpoint", "data", "argtypes"},
    "quant": BASE | {"fileio", "config", "models", "checkpoint", "data", "infer", "argtypes"},
    "prune": BASE | {"fileio", "config", "checkpoint", "infer", "argtypes"},
    "eval": BASE | {"fileio", "config", "parallel", "models", "checkpoint", "data", "infer", "argtypes"},
    "interop": BASE | {"fileio", "config", "models", "checkpoint", "data", "infer"},
    "scaling": BASE | {"fileio", "config", "parallel", "models", "hardware", "train", "argtypes"},
    "sweep": BASE | {"fileio", "config", "models", "data", "train", "scaling", "argtypes"},
    "rag": BASE | {"fileio", "config", "models", "checkpoint", "data", "infer", "interop", "argtypes"},
    "tools": BASE | {"fileio", "data", "infer", "rag", "argtypes"},
}


def imports_by_package() -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    root = os.path.join(REPO, "llm_jax")
    for folder, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, root).split(os.sep)
            package = "cli" if parts[0] in ("cli.py", "__main__.py") else parts[0].removesuffix(".py")
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "llm_jax":
                    pieces = node.module.split(".")
                    targets = [a.name for a in node.names] if len(pieces) == 1 else [pieces[1]]
                elif isinstance(node, ast.Import):
                    targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("llm_jax.")]
                else:
                    continue
                out.setdefault(package, set()).update((t, os.path.relpath(path, REPO)) for t in targets if t != package)
    return out


def test_imports_flow_one_way():
    found = imports_by_package()
    assert set(found) - {"cli"} <= set(ALLOWED), sorted(set(found) - set(ALLOWED))
    wrong = sorted(f"{where} imports llm_jax.{target}" for package, edges in found.items() if package != "cli"
                   for target, where in edges if target not in ALLOWED[package])
    assert wrong == []


def test_the_allowed_graph_has_no_cycle():
    state = {}

    def visit(node, path):
        assert state.get(node) != "open", " -> ".join(path + [node])
        if state.get(node) == "done":
            return
        state[node] = "open"
        for nxt in ALLOWED.get(node, ()):
            visit(nxt, path + [node])
        state[node] = "done"

    for package in ALLOWED:
        visit(package, [])
