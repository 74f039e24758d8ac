"""The continuous-batching engine: every request gets exactly what `generate` gives it alone (greedy and seeded
sampling with per-request parameters) while requests join and leave the rows; stop ids, on_token stops,
cancellation, the background thread, bad requests; the batching benchmark's bookkeeping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import small_config
from llm_jax.errors import UserError
from llm_jax.infer.bench_batching import run_continuous, run_static, workload
from llm_jax.infer.decode import Sampling, generate
from llm_jax.infer.engine import Engine, Request
from llm_jax.models import build_model

CONTEXT = 64


@pytest.fixture(scope="module")
def model_params():
    cfg = small_config(seq_len=CONTEXT, positions="rope", n_kv_heads=2).model
    model = build_model(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, CONTEXT), jnp.int32))["params"]
    # sharper logits than at initialisation, so greedy paths vary and a wrong row, key or position shows
    return model, jax.tree.map(lambda x: x * 20 if x.ndim > 1 else x, params), cfg.vocab_size


def _alone(model, params, request):
    return generate(model, params, [request.prompt_ids], request.max_tokens, CONTEXT,
                    sampling=Sampling(request.temperature, request.top_k, request.top_p), seeds=[request.seed],
                    eos_id=request.stop_ids[0] if request.stop_ids else None).new_ids[0]


def test_requests_joining_and_leaving_rows_get_what_each_gets_alone(model_params):
    model, params, vocab = model_params
    rng = np.random.default_rng(0)
    engine = Engine(model, params, CONTEXT, rows=3, steps_per_sync=3)
    requests = []
    for i in range(8):
        prompt = rng.integers(1, vocab, int(rng.integers(1, 20))).tolist()
        sampling = [dict(), dict(temperature=0.9, top_k=5), dict(temperature=1.2, top_p=0.8)][i % 3]
        requests.append(engine.submit(Request(prompt, int(rng.integers(1, 30)), seed=i, **sampling)))
    engine.run_until_idle()
    assert engine.pending() == 0
    for request in requests:
        assert request.finish_reason == "length" and len(request.new_ids) == request.max_tokens
        assert request.new_ids == _alone(model, params, request)
    # sampled rows really sampled: they differ from the greedy continuation of the same prompt
    greedy = [_alone(model, params, Request(r.prompt_ids, r.max_tokens)) for r in requests if r.temperature > 0]
    assert greedy != [r.new_ids for r in requests if r.temperature > 0]


def test_a_request_takes_a_freed_row_while_a_long_one_still_runs(model_params):
    model, params, _ = model_params
    engine = Engine(model, params, CONTEXT, rows=2, steps_per_sync=1)
    long = engine.submit(Request([5, 6, 7], 40))
    short = engine.submit(Request([8, 9], 3))
    late = engine.submit(Request([10, 11, 12, 13], 5))  # waits for a row: the short one's
    engine.run_until_idle()
    assert short.finished_at < late.first_token_at < long.finished_at
    assert late.new_ids == _alone(model, params, late)


def test_stop_ids_on_token_and_cancellation_end_a_request(model_params):
    model, params, _ = model_params
    greedy = _alone(model, params, Request([5, 6, 7], 12))
    j = next(i for i, t in enumerate(greedy) if t not in greedy[:i] and i >= 2)  # first time this id appears
    engine = Engine(model, params, CONTEXT, rows=2, steps_per_sync=4)
    at_stop = engine.submit(Request([5, 6, 7], 12, stop_ids=(greedy[j],)))
    at_first = engine.submit(Request([5, 6, 7], 12, stop_ids=(greedy[0],)))
    told = engine.submit(Request([5, 6, 7], 12, on_token=lambda r, t: len(r.new_ids) < 4))
    waiting = engine.submit(Request([5, 6, 7], 12))
    engine.cancel(waiting)
    engine.run_until_idle()
    assert (at_stop.new_ids, at_stop.finish_reason) == (greedy[:j], "stop")
    assert (at_first.new_ids, at_first.finish_reason) == ([], "stop")
    assert (told.new_ids, told.finish_reason) == (greedy[:4], "stop")
    assert (waiting.new_ids, waiting.finish_reason) == ([], "cancelled")
    running = engine.submit(Request([5, 6, 7], 30))
    engine.step()
    engine.cancel(running)
    engine.run_until_idle()
    assert running.finish_reason == "cancelled" and 0 < len(running.new_ids) < 30


def test_the_background_thread_serves_and_stops(model_params):
    model, params, _ = model_params
    engine = Engine(model, params, CONTEXT, rows=2)
    engine.start()
    try:
        done = [engine.submit(Request([3, 4], 6)) for _ in range(3)]
        assert all(r.done.wait(timeout=120) for r in done)
    finally:
        engine.stop()
    assert all(r.new_ids == _alone(model, params, r) for r in done)
    with pytest.raises(UserError, match="stopped"):
        engine.submit(Request([3], 1))


@pytest.mark.parametrize("request_, message", [
    (Request([], 4), "prompt is empty"), (Request([1, 2], 0), "max_tokens must be positive"),
    (Request([1] * 60, 5), "exceeds the engine's 64 tokens"), (Request([1], 1, stop_ids=(1, 2, 3, 4, 5)), "stop")])
def test_a_bad_request_is_one_error_before_it_queues(model_params, request_, message):
    model, params, _ = model_params
    engine = Engine(model, params, CONTEXT, rows=1)
    with pytest.raises(UserError, match=message):
        engine.submit(request_)
    assert engine.pending() == 0


def test_both_schedulers_of_the_batching_benchmark_produce_every_budgeted_token(model_params):
    model, params, vocab = model_params
    prompts, budgets = workload(6, (2, 20), (1, 20), vocab)
    static = run_static(model, params, CONTEXT, prompts, budgets, rows=2)
    continuous = run_continuous(model, params, CONTEXT, prompts, budgets, rows=2, max_len=40, steps_per_sync=2)
    for result in (static, continuous):
        assert result["tokens_per_sec"] * result["seconds"] == pytest.approx(sum(budgets))
        assert 0 < result["mean_ttft_s"] <= result["mean_latency_s"] <= result["seconds"]
