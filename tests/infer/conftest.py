import pytest

from helpers import small_config
from llm_jax.train.loop import train


@pytest.fixture(scope="session")
def trained(small_corpus, tmp_path_factory):
    """A 20-step run of the small test model (d 32, 16 tokens) on the small corpus: (config, work directory)."""
    cfg = small_config()
    cfg.data.corpus, cfg.model.vocab_size = small_corpus, 384
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    train(cfg, workdir, log=lambda _: None)
    return cfg, workdir
