"""tiny: the CPU default — a 3.7M-parameter GPT-style model on the embedded Shakespeare corpus.

Purpose: the run `llm-jax train` (no arguments) and `make train` perform; the smallest model that learns
something visible, for checking an install and for fast experiments.
Run:     llm-jax train --config configs/tiny.py --workdir runs/tiny
Reaches: see the README's "Default run" table (validation loss vs. the corpus's unigram entropy, wall time
         on a 2-core CPU), reproduced by `make train`.
"""

from llm_jax.config import default_config


def get_config():
    return default_config()  # the schema's defaults are this run
