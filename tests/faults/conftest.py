"""Fixtures of the fault-injection suite (helpers in faultlib.py)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for `import faultlib`

from faultlib import cli, train_args  # noqa: E402


@pytest.fixture(scope="session")
def finished_run(small_corpus, tmp_path_factory):
    """A finished 30-step run with checkpoints at 10, 20 and 30 (copied by each test that changes it)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    proc = cli(*train_args(small_corpus, workdir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy
