"""Several real processes on localhost each read only their slice; together they give the 1-process batch."""

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO, small_config
from llm_jax.data.prepare import prepare

READER = """
import json, sys
import numpy as np
from llm_jax.data.loader import BatchLoader, PackedWindows
from llm_jax.data.shards import PreparedSplit
directory, index, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
windows = PackedWindows.from_split(PreparedSplit(directory, "train"), 32)
loader = BatchLoader([windows], 8, seed=5, process_index=index, process_count=count)
print(json.dumps({str(s): loader.batch(s)["inputs"].tolist() for s in (0, 1, 17, 400)}))
"""


@pytest.fixture(scope="module")
def prepared(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "out"
    prepare([small_corpus], str(out), small_config().data, 384, log=lambda _: None)
    return str(out)


def read_in_processes(prepared, count):
    procs = [subprocess.Popen([sys.executable, "-c", READER, prepared, str(i), str(count)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(count)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    slices = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    return {step: np.concatenate([np.asarray(s[step]) for s in slices]) for step in slices[0]}


def test_global_batch_is_the_same_for_1_2_and_4_processes(prepared):
    single = read_in_processes(prepared, 1)
    for count in (2, 4):
        multi = read_in_processes(prepared, count)
        for step in single:
            np.testing.assert_array_equal(multi[step], single[step])
    assert single["0"].shape == (8, 32) and not np.array_equal(single["0"], single["1"])
