"""Shared fixtures: a private data cache, a small real-text corpus and a small trained run."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for `import helpers`
# The suite runs on CPU (fake devices for meshes). With libtpu installed (the `tpu` extra, for ahead-of-time TPU
# compiles) JAX would otherwise also try, and noisily fail, to start a TPU runtime in every process.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


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


@pytest.fixture(scope="session")
def trained(small_corpus, tmp_path_factory):
    """A 20-step run of the small test model (d 32, 16 tokens) on the small corpus, shared by the inference,
    serving and quantization tests: (config, work directory)."""
    from helpers import small_config
    from llm_jax.train.loop import train
    cfg = small_config()
    cfg.data.corpus, cfg.model.vocab_size = small_corpus, 384
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    train(cfg, workdir, log=lambda _: None)
    return cfg, workdir


# --------------------------------------------------------------------------------------- the fault table
# Tests marked `@pytest.mark.fault(fault="...", outcome="...")` are the fault-injection cases. A test that runs
# a command hands its CompletedProcess (or (returncode, stderr)) to the `observe` fixture. With
# `--fault-table docs/reliability.md`, a run in which every fault case passed rewrites the table between the
# markers in that file from what was observed (`make fault-table`): the table is generated, never typed.

TABLE_START, TABLE_END = "<!-- fault-table:start -->", "<!-- fault-table:end -->"


def pytest_addoption(parser):
    parser.addoption("--fault-table", default=None, help="rewrite this file's fault table from the fault cases")


def pytest_configure(config):
    config.addinivalue_line("markers", "fault(fault, outcome): a fault-injection case listed in docs/reliability.md")
    config._fault_rows = {}


@pytest.fixture
def observe(request):
    """observe(proc_or_status, stderr=None): records a command's exit status and last line for the fault table."""
    def record(proc, stderr=None):
        status, err = (proc.returncode, proc.stderr) if stderr is None else (proc, stderr)
        lines = [line for line in (err or "").strip().splitlines() if line.strip()]
        if not lines and stderr is None:  # a success that printed nothing on stderr: its last output line
            lines = [line for line in (proc.stdout or "").strip().splitlines() if line.strip()]
        request.node.user_properties.append(("fault_observed", (status, lines[-1] if lines else "")))
    return record


def _shorten(line: str) -> str:
    import re
    line = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s:',)]+", "<tmp>", line)
    line = re.sub(r"\b\d{8}-\d{6}-[0-9a-f]{6}\b", "<run id>", line)
    line = re.sub(r"\b(\d+)-\d{10}\b", r"\1-<time>", line)
    return (line[:197] + "...") if len(line) > 200 else line


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    marker = item.get_closest_marker("fault")
    if marker is None or report.when != "call":
        return
    observed = [value for key, value in item.user_properties if key == "fault_observed"]
    case = item.nodeid.split("[", 1)[0]  # the parametrized cases of one test share a row
    row = item.config._fault_rows.setdefault(case, {"fault": marker.kwargs["fault"], "passed": True, "cases": 0,
                                                   "outcome": marker.kwargs["outcome"], "observed": [], "test": case})
    row["passed"] &= report.passed
    row["cases"] += 1
    row["observed"] += observed


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("--fault-table")
    rows = session.config._fault_rows
    if not path or not rows:
        return
    if not all(row["passed"] for row in rows.values()):
        print(f"\nfault table NOT written: {sum(not r['passed'] for r in rows.values())} fault case(s) failed")
        return
    lines = ["| fault | what must happen | observed: exit status and last line | test |", "|---|---|---|---|"]
    for row in rows.values():
        seen = "<br>".join(f"`{status}` {f'`{_shorten(last)}`' if last else ''}".replace("|", "\\|")
                           for status, last in row["observed"])
        cases = f" ({row['cases']} cases)" if row["cases"] > 1 else ""
        lines.append(f"| {row['fault']} | {row['outcome']} | {seen or 'passed (in-process test)'} | "
                     f"`{row['test']}`{cases} |".replace("\n", " "))
    text = open(path, encoding="utf-8").read()
    from llm_jax.errors import exit_status_table
    exit_head, _, exit_rest = text.partition("<!-- exit-table:start -->")
    text = f"{exit_head}<!-- exit-table:start -->\n{exit_status_table()}\n<!-- exit-table:end -->" \
        f"{exit_rest.partition('<!-- exit-table:end -->')[2]}" if exit_rest else text
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    count = f"{sum(r['cases'] for r in rows.values())} cases in {len(rows)} tests, generated by `make fault-table` (every case passed)."
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}{TABLE_START}\n{count}\n\n" + "\n".join(lines) + f"\n{TABLE_END}{tail}")
    print(f"\nfault table: {len(rows)} tests written to {path}")
