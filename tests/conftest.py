"""Shared fixtures: a private data cache and a small real-text corpus."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for `import helpers`


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tokenizers and token arrays go to a per-session cache, never the user's ~/.cache."""
    path = str(tmp_path_factory.mktemp("llm_jax_cache"))
    old = os.environ.get("LLM_JAX_CACHE")
    os.environ["LLM_JAX_CACHE"] = path
    yield path
    if old is None:
        os.environ.pop("LLM_JAX_CACHE", None)
    else:
        os.environ["LLM_JAX_CACHE"] = old


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> str:
    """A directory of 40 Shakespeare scenes (one .txt per scene, ~250 KB): real text, quick to tokenize."""
    from llm_jax.data.corpus import shakespeare_scenes
    path = tmp_path_factory.mktemp("corpus")
    for i, scene in enumerate(shakespeare_scenes()[:40]):
        (path / f"scene{i:03d}.txt").write_text(scene, encoding="utf-8")
    return str(path)
