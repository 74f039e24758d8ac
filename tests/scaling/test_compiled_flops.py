import pytest
from helpers import small_config

from llm_jax.models.accounting import flops_per_token
from llm_jax.scaling import aot

SHAPES = {
    "gpt (gelu, learned positions, tied, biases)": dict(d_ff=512),
    "llama (swiglu, gqa, rope, untied, rmsnorm)": dict(ffn="swiglu", n_kv_heads=2, tie_embeddings=False,
                                                      norm="rmsnorm", positions="rope", use_bias=False),
}


@pytest.mark.parametrize("name", SHAPES)
def test_analytic_flops_per_token_within_10_percent_of_xla_cost_analysis(name):
    cfg = small_config(d_model=128, n_heads=4, head_dim=32, seq_len=64, vocab_size=512, n_layers=2, **SHAPES[name])
    cfg.model.scan_unroll = cfg.model.n_layers   # XLA counts a rolled loop's body once
    step = aot.compile_train_step(cfg)
    measured = aot.flops_per_token(step, cfg)
    assert measured == pytest.approx(flops_per_token(cfg.model), rel=0.10)
    assert aot.memory(step)["argument_bytes"] > 0
