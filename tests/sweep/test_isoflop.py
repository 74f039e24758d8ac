import pytest

from llm_jax.models.accounting import flops_per_token
from llm_jax.sweep import Sweep, members
from llm_jax.sweep.isoflop import isoflop_variants, shape
from llm_jax.sweep.spec import member_config


def test_isoflop_variants_spend_the_budget():
    variants, meta = isoflop_variants("configs/ablation.py", [1e12, 3e12], [shape(32, 2), shape(64, 3)],
                                      base_overrides={"model.scan_unroll": 1}, lr_rule=lambda m: 1e-3)
    assert len(variants) == 4
    for name, overrides in variants.items():
        sweep = Sweep(name="iso", base="configs/ablation.py", variants={name: overrides})
        assert overrides["model.scan_unroll"] == 1
        cfg = member_config(sweep, members(sweep)[0])
        spent = overrides["train.steps"] * cfg.train.batch_size * cfg.model.seq_len * flops_per_token(cfg.model)
        assert spent == pytest.approx(meta[name]["budget"], rel=0.01)
        assert meta[name]["compute_params"] == pytest.approx(flops_per_token(cfg.model) / 6)
        assert overrides["train.lr"] == 1e-3
