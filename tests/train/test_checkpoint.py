import jax
import numpy as np

from helpers import small_config
from llm_jax.infer.load import abstract_params
from llm_jax.models.config import ModelConfig
from llm_jax.models.transformer import Transformer
from llm_jax.parallel.mesh import make_mesh, rules_tuple
from llm_jax.train import checkpoint
from llm_jax.train.loop import build
from llm_jax.train.state import init_state


def test_full_state_and_params_only_restore(tmp_path):
    cfg = small_config()
    mesh = make_mesh(cfg)
    model, tx, _, abstract, _, scale = build(cfg, mesh)
    state, _ = init_state(model, tx, cfg.model.seq_len, scale, 0, mesh, rules_tuple(cfg))
    state = state.replace(step=state.step + 7)
    mngr = checkpoint.manager(str(tmp_path))
    checkpoint.save(mngr, state)
    mngr.wait_until_finished()
    assert mngr.latest_step() == 7 and checkpoint.has_train_state(mngr, 7)
    restored = checkpoint.restore(mngr, 7, abstract)
    mngr.close()
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params, step = checkpoint.restore_params(
        str(tmp_path), abstract_params(Transformer(ModelConfig.from_config(cfg.model)), cfg.model.seq_len))
    assert step == 7
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
