import jax
import numpy as np
import pytest

from helpers import small_config
from llm_jax.scaling.mup import coordinate_check, width_slope
from llm_jax.train.optimizer import make_optimizer, mup_lr_multipliers

WIDTHS = [32, 64, 128, 256]


@pytest.fixture(scope="module")
def checks():
    return {mup: coordinate_check(WIDTHS, mup=mup, steps=5) for mup in (False, True)}


def test_coordinate_check_activations_stay_flat_in_width_under_mup_only(checks):
    sp, mup = checks[False], checks[True]
    # Standard parametrization with Adam: the residual stream and the logits grow with width.
    assert width_slope(sp, "hidden") > 1.0 and width_slope(sp, "logits") > 0.4
    # muP: both stay within a factor ~1.5 over an 8x range of widths.
    assert abs(width_slope(mup, "hidden")) < 0.35 and abs(width_slope(mup, "logits")) < 0.35
    for key in ("hidden", "logits"):
        sizes = [mup[w][key] for w in WIDTHS]
        assert max(sizes) / min(sizes) < 2.0, (key, sizes)


def test_mup_equals_the_standard_parametrization_at_the_base_width_up_to_attention_scale(checks):
    assert checks[True][32]["hidden"] == pytest.approx(checks[False][32]["hidden"], rel=0.1)


def test_mup_learning_rates_scale_hidden_kernels_only():
    cfg = small_config(d_model=64, mup=True, mup_base_width=16)
    from llm_jax.models import build_model
    import flax.linen as nn
    params = nn.unbox(build_model(cfg.model).init(
        jax.random.key(0), np.zeros((1, 16), np.int32))["params"])
    factors = mup_lr_multipliers(params, 4.0)
    assert factors["layers"]["attention"]["query"]["kernel"] == 0.25
    assert factors["layers"]["mlp"]["wo"]["kernel"] == 0.25
    assert factors["layers"]["attention"]["query"]["bias"] == 1.0 and factors["embed"]["embedding"] == 1.0
    # The update of a hidden kernel is 1/4 of the update the same gradient gives without muP.
    grads = jax.tree_util.tree_map(np.ones_like, params)
    with_mup = make_optimizer(cfg.train, cfg.model)
    cfg.model.mup = False
    without = make_optimizer(cfg.train, cfg.model)
    u_mup, _ = with_mup.update(grads, with_mup.init(params), params)
    u_sp, _ = without.update(grads, without.init(params), params)
    q = lambda u: np.asarray(u["layers"]["attention"]["query"]["kernel"])
    np.testing.assert_allclose(q(u_mup), q(u_sp) / 4, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(u_mup["embed"]["embedding"]), np.asarray(u_sp["embed"]["embedding"]))
