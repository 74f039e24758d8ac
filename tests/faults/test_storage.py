"""Storage faults through the real command: a disk that fills up during training."""

import os

import pytest
from faultlib import cli, one_clear_line, train_args
from helpers import small_disk

from llm_jax.checkpoint import seal
from llm_jax.errors import EXIT_IO


@pytest.mark.fault(fault="the disk fills up during training (1.5 MB tmpfs)",
                   outcome="exit 74, one line: the step, 'No space left on device', the last good checkpoint, "
                           "which is intact; no orbax traceback")
def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(small_corpus, tmp_path, observe):
    with small_disk(tmp_path / "small", "1500k") as mount:
        workdir = mount / "run"
        proc = cli(*train_args(small_corpus, workdir, "--config.checkpoint.every=2", steps=100))
        observe(proc)
        line = one_clear_line(proc, EXIT_IO, "cannot write the checkpoint at step", "No space left on device",
                              "The last good checkpoint is step")
        good = line.split("The last good checkpoint is step ")[1].split(";")[0]
        assert seal.problem(os.path.join(workdir, "checkpoints", good)) is None
        # nothing but that line, besides the documented once-per-run `attention: <impl> (...)` choice
        noise = [x for x in proc.stderr.strip().splitlines() if x != line and not x.startswith("attention: ")]
        assert noise == [], proc.stderr[-3000:]
