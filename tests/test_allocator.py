"""The host allocator settings (llm_jax/allocator.py): applied only before jax, opt-out honoured, and their
effect — a jitted step's large temporaries stop page-faulting — counted in page faults, not timed."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tunes (or not), then runs a jitted function whose 64 MiB temporary is allocated and freed on every call and
# prints the minor page faults per call.
FAULTS = """
import json, resource, sys
from llm_jax import allocator
state = allocator.tune()
import jax, jax.numpy as jnp
f = jax.jit(lambda a: jnp.tanh(a @ a.T).sum())   # a @ a.T: a 64 MiB temporary (4096 x 4096 float32)
a = jnp.ones((4096, 16))
for _ in range(3):
    jax.block_until_ready(f(a))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    jax.block_until_ready(f(a))
print(json.dumps({"state": state, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10}))
"""


def _run(code: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_tuned_allocator_keeps_step_buffers_mapped():
    system = _run(FAULTS, LLM_JAX_MALLOC="system")
    tuned = _run(FAULTS, LLM_JAX_MALLOC="tuned")
    assert system["state"] == "system (LLM_JAX_MALLOC=system)"
    assert tuned["state"] == "tuned"
    # glibc's defaults give the 64 MiB buffer back to the kernel on every call: ~16,384 fresh 4 KiB pages each time
    assert system["faults"] > 8000, system
    assert tuned["faults"] < system["faults"] / 20, (tuned, system)


def test_not_tuned_once_jax_is_imported():
    code = "import json, jax\nfrom llm_jax import allocator\nprint(json.dumps({'state': allocator.tune()}))"
    assert _run(code)["state"] == "system (jax was imported before the allocator could be tuned)"


def test_cli_tunes_before_jax():
    code = ("import json, sys\nfrom llm_jax import allocator, cli\ntry:\n    cli.main(['--help'])\n"
            "except SystemExit:\n    pass\nprint(json.dumps({'state': allocator.state()}))")
    assert _run(code)["state"] == "tuned"
