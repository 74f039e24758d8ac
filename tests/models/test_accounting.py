import pytest
from helpers import small_config

from llm_jax.models.accounting import flops_per_token, layer_params, non_embedding_params, param_count


def test_guide_layer_formula_12_d_squared_without_biases():
    cfg = small_config(d_model=768, n_heads=12, use_bias=False, norm="rmsnorm")
    assert layer_params(cfg.model) == 12 * 768**2 + 2 * 768  # 4d^2 attention + 8d^2 FFN (+ two norm gains)


def test_gpt2_small_total_matches_the_guide_example():
    cfg = small_config(vocab_size=50257, seq_len=1024, d_model=768, n_layers=12, n_heads=12)
    assert param_count(cfg.model) == 124_439_808
    assert non_embedding_params(cfg.model) == 124_439_808 - 50257 * 768 - 1024 * 768


def test_gqa_and_swiglu_counts():
    cfg = small_config(d_model=64, n_heads=8, n_kv_heads=2, ffn="swiglu", d_ff=160, use_bias=False,
                       norm="rmsnorm", positions="rope", tie_embeddings=False)
    d, hd, kv = 64, 8, 2
    assert layer_params(cfg.model) == 2 * d * d + 2 * d * kv * hd + 3 * d * 160 + 2 * d
    assert param_count(cfg.model) == 2 * 256 * d + 2 * layer_params(cfg.model) + d


def test_flops_per_token_is_6n_plus_attention():
    cfg = small_config(d_model=768, n_heads=12, n_layers=12, vocab_size=50257, seq_len=1024)
    n = non_embedding_params(cfg.model) + 50257 * 768
    assert flops_per_token(cfg.model) == pytest.approx(6 * n + 12 * 12 * 1024 * 768)
    assert flops_per_token(cfg.model, seq_len=2048) > flops_per_token(cfg.model)


def test_guide_compute_budget_examples():
    from llm_jax.models.accounting import (
        device_hours,
        training_cost,
        training_flops,
        training_steps,
        training_time_days,
    )
    flops = training_flops(175e9, 300e9)
    assert flops == pytest.approx(3.15e23)                               # the guide: ~3.14e23 for GPT-3
    hours = device_hours(flops, 312e12)
    assert hours == pytest.approx(280_449, rel=1e-4)                     # the guide: ~280,000 A100-hours
    assert training_cost(hours, 2.0) == pytest.approx(560_897, rel=1e-4)  # the guide: ~$560,000
    assert training_steps(300e9, 512, 2048) == pytest.approx(286_102, rel=1e-5)
    assert training_time_days(flops, 1024, 312e12, 0.5) == pytest.approx(hours / 0.5 / 1024 / 24)
