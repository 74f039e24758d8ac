import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax.errors import UserError
from llm_jax.infer.generate import generate_ids
from llm_jax.models import build_model


@pytest.fixture(scope="module")
def model_and_params():
    cfg = small_config(positions="rope")
    model = build_model(cfg.model)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
    return model, params


def test_greedy_generation_equals_argmax_of_a_full_forward(model_and_params):
    model, params = model_and_params
    prompt = [5, 17, 42]
    new = generate_ids(model, params, prompt, 6, 16, temperature=0.0)
    ids = list(prompt)
    for _ in range(6):
        logits = model.apply({"params": params}, jnp.asarray([ids]))
        ids.append(int(jnp.argmax(logits[0, -1])))
    assert new == ids[3:]


def test_long_generations_slide_the_window_and_stop_at_eos(model_and_params):
    model, params = model_and_params
    new = generate_ids(model, params, [1, 2, 3], 30, 16, temperature=1.0, seed=3)
    assert len(new) == 30 and all(0 <= t < 256 for t in new)
    first = new[0]
    stopped = generate_ids(model, params, [1, 2, 3], 30, 16, temperature=1.0, seed=3, eos_id=first)
    assert stopped == []
    assert generate_ids(model, params, [1, 2, 3], 30, 16, temperature=1.0, seed=3) == new  # seeded


def test_empty_prompt_is_an_error(model_and_params):
    model, params = model_and_params
    with pytest.raises(UserError, match="the prompt is empty"):
        generate_ids(model, params, [], 3, 16)
