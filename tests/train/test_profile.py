"""train.profile_steps: a jax.profiler trace of the chosen steps lands in <workdir>/profile and the console says
where; a malformed range is one clear error."""

import glob
import os

import pytest

from helpers import run_cli, small_config
from llm_jax import config as config_lib
from llm_jax.config import ConfigError

QUICK = ["--config.model.n_layers=1", "--config.model.d_model=32", "--config.model.n_heads=2",
         "--config.model.seq_len=32", "--config.train.steps=4", "--config.train.warmup_steps=1",
         "--config.train.eval_every=0", "--config.train.eval_batches=1", "--config.checkpoint.every=4"]


def test_a_profile_of_the_chosen_steps_is_written_and_announced(tmp_path, small_corpus):
    proc = run_cli("train", "--workdir", tmp_path, f"--config.data.corpus={small_corpus}",
                   "--config.train.profile_steps=2:3", *QUICK)
    assert proc.returncode == 0, proc.stderr[-2000:]
    traces = glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 1000
    assert f"profile of steps 2-3 in {tmp_path / 'profile'}" in proc.stdout + proc.stderr


@pytest.mark.parametrize("spec", ["3", "0:2", "5:4", "a:b"])
def test_a_malformed_profile_range_is_refused(spec):
    cfg = small_config()
    cfg.train.profile_steps = spec
    with pytest.raises(ConfigError, match="train.profile_steps"):
        config_lib.validate(cfg)
