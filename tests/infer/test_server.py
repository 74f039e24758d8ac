"""The OpenAI-compatible server, driven by the official `openai` client: completions, chat, streaming, stop
strings, n > 1, a bounded concurrent load whose greedy outputs equal `generate`, every kind of bad request as a
4xx in OpenAI's error shape (the server keeps serving), and `llm-jax serve` end to end on loopback."""

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import jax
import jax.numpy as jnp
import pytest

from helpers import REPO, small_config
from llm_jax.data.tokenizers import load_tokenizer
from llm_jax.data import chat
from llm_jax.infer.decode import generate
from llm_jax.infer.engine import Engine, Request
from llm_jax.models import build_model

openai = pytest.importorskip("openai", reason="the server is driven by the openai client: pip install -e '.[dev]'")
uvicorn = pytest.importorskip("uvicorn", reason="llm-jax serve needs the serve extra: pip install -e '.[serve]'")
from llm_jax.infer.server import Server, create_app  # noqa: E402 (needs fastapi, from the same extra)

CONTEXT = 64
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")
PROMPTS = ["First Citizen:", "ROMEO: O", "the king", "All:", "What say you", "Speak, speak.", "KING", "Be"]


@pytest.fixture(scope="module")
def served(trained):
    """A server (4 rows) on a free loopback port over a 64-token model with the trained run's tokenizer."""
    _, workdir = trained
    tokenizer = load_tokenizer(workdir)
    cfg = small_config(seq_len=CONTEXT, positions="rope", vocab_size=tokenizer.vocab_size).model
    model = build_model(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, CONTEXT), jnp.int32))["params"]
    params = jax.tree.map(lambda x: x * 20 if x.ndim > 1 else x, params)  # varied greedy paths
    engine = Engine(model, params, CONTEXT, rows=4)
    app = create_app(Server(engine, tokenizer, "tiny", chat_template=TEMPLATE, max_pending=32))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    engine.start()
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    yield url, openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=120, max_retries=0), \
        (model, params, tokenizer), engine
    server.should_exit = True
    thread.join(timeout=30)
    engine.stop()


def _greedy(model_tok, prompt: str, max_tokens: int) -> str:
    model, params, tokenizer = model_tok
    ids = generate(model, params, [tokenizer.encode(prompt)], max_tokens, CONTEXT, eos_id=tokenizer.eos_id)
    return tokenizer.decode(ids.new_ids[0])


def test_completions_and_chat_equal_generate(served):
    _, client, mt, _ = served
    out = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=12, temperature=0)
    assert out.choices[0].text == _greedy(mt, PROMPTS[0], 12) and out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 12 and out.usage.prompt_tokens == len(mt[2].encode(PROMPTS[0]))
    two = client.completions.create(model="tiny", prompt=PROMPTS[:2], max_tokens=8, temperature=0)
    assert [c.text for c in two.choices] == [_greedy(mt, p, 8) for p in PROMPTS[:2]]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who art thou?"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    rendered = "<system>Be brief.\n<user>Who art thou?\n<assistant>"
    assert chat.render(TEMPLATE, messages) == rendered
    assert reply.choices[0].message.content == _greedy(mt, rendered, 10)
    assert reply.choices[0].message.role == "assistant" and reply.object == "chat.completion"
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_streaming_gives_the_same_text_in_pieces(served):
    _, client, mt, _ = served
    pieces, reasons = [], []
    for chunk in client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=12, temperature=0,
                                           stream=True):
        pieces.append(chunk.choices[0].text)
        reasons.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == _greedy(mt, PROMPTS[2], 12) and len([p for p in pieces if p]) > 1
    assert reasons[-1] == "length" and set(reasons[:-1]) == {None}
    deltas = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Speak."}], max_tokens=8, temperature=0, stream=True)]
    assert "".join(deltas) == _greedy(mt, "<user>Speak.\n<assistant>", 8)


def test_a_client_that_goes_away_mid_stream_cancels_its_request(served, monkeypatch):
    url, _, _, engine = served
    submitted, step = [], engine.step
    monkeypatch.setattr(engine, "submit", lambda r, submit=engine.submit: submitted.append(r) or submit(r))
    monkeypatch.setattr(engine, "step", lambda: time.sleep(0.2) or step())  # 50 tokens take >= 2.6 s
    with httpx.stream("POST", url + "/v1/completions", timeout=60,
                      json={"prompt": "Be", "max_tokens": 50, "temperature": 0, "stream": True}) as response:
        assert next(response.iter_lines()).startswith("data: ")
    assert submitted[-1].done.wait(timeout=30)
    assert submitted[-1].finish_reason == "cancelled" and len(submitted[-1].new_ids) < 50
    assert engine.pending() == 0


def test_a_stop_string_cuts_the_text_there(served):
    _, client, mt, _ = served
    full = _greedy(mt, PROMPTS[3], 20)
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop and stop in full
    out = client.completions.create(model="tiny", prompt=PROMPTS[3], max_tokens=20, temperature=0, stop=[stop])
    assert out.choices[0].text == full[:full.index(stop)] and out.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt=PROMPTS[3], max_tokens=20, temperature=0, stop=stop, stream=True))
    assert streamed == full[:full.index(stop)]


def test_32_concurrent_requests_from_8_threads_all_answer_as_generate_does(served):
    _, client, mt, _ = served
    jobs = [(PROMPTS[i % len(PROMPTS)], 4 + i % 9) for i in range(32)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda job: client.completions.create(
            model="tiny", prompt=job[0], max_tokens=job[1], temperature=0, timeout=120).choices[0].text, jobs))
    assert texts == [_greedy(mt, p, n) for p, n in jobs]


@pytest.mark.parametrize("body, status, words", [
    (b'{"prompt": "hi", "max_tokens": ', 400, "not valid JSON"),
    ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens must be at least 1"),
    ({"prompt": "hi", "max_tokens": "ten"}, 400, "max_tokens"),
    ({"prompt": "hi", "temperature": -1}, 400, "temperature"),
    ({"prompt": "hi " * 80, "max_tokens": 4}, 400, "exceeds the engine's 64 tokens"),
    ({"prompt": "hi", "model": "gpt-5"}, 404, "does not exist"),
    ({"max_tokens": 4}, 400, "prompt"),
])
def test_bad_requests_get_a_4xx_in_openais_shape_and_the_server_keeps_serving(served, body, status, words):
    url, client, mt, _ = served
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body}
    response = httpx.post(url + "/v1/completions", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"
    assert httpx.get(url + "/v1/nowhere", timeout=10).json()["error"]["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "wizard", "content": "x"}])


CALC = {"type": "function", "function": {"name": "calc", "description": "arithmetic", "parameters": {
    "type": "object", "properties": {"x": {"type": "string", "maxLength": 4}}, "required": ["x"]}}}


def test_tools_give_tool_calls_in_openais_shape_and_the_conversation_goes_on(served):
    """A 128-token model (a call costs ~40 tokens of this small vocabulary) behind the official client; tool turns
    are decoded beside the engine, so the engine need not run."""
    from starlette.testclient import TestClient
    _, _, (_, _, tokenizer), _ = served
    cfg = small_config(seq_len=128, positions="rope", vocab_size=tokenizer.vocab_size).model
    model = build_model(cfg)
    params = model.init(jax.random.key(1), jnp.zeros((1, 128), jnp.int32))["params"]
    params = jax.tree.map(lambda x: x * 20 if x.ndim > 1 else x, params)
    app = create_app(Server(Engine(model, params, 128, rows=1), tokenizer, "tiny", chat_template=TEMPLATE))
    with TestClient(app) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)
        messages = [{"role": "user", "content": "What is 2+3?"}]
        reply = client.chat.completions.create(model="tiny", messages=messages, tools=[CALC],
                                               tool_choice="required", max_tokens=80, temperature=1.0, seed=0)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
        call = choice.message.tool_calls[0]
        assert call.type == "function" and call.function.name == "calc" and call.id.startswith("call_")
        arguments = json.loads(call.function.arguments)
        assert set(arguments) == {"x"} and isinstance(arguments["x"], str) and len(arguments["x"]) <= 4
        assert reply.usage.completion_tokens > 0
        # the client runs the tool and sends the result back; the call is shown to the model as protocol text
        follow = messages + [choice.message.model_dump(exclude_none=True),
                             {"role": "tool", "tool_call_id": call.id, "content": "5"}]
        again = client.chat.completions.create(model="tiny", messages=follow, tools=[CALC], tool_choice="none",
                                               max_tokens=6, temperature=0)
        assert again.choices[0].finish_reason in ("stop", "length") and again.choices[0].message.tool_calls is None
        for body, said in [({"tools": [{"type": "function", "function": {"name": "no spaces"}}]}, "letters, digits"),
                           ({"tools": [CALC], "tool_choice": {"type": "function", "function": {"name": "x"}}},
                            "not among the tools"),
                           ({"tools": [CALC], "stream": True}, "no stream"),
                           ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]},
                            "tool_calls[0] must be")]:
            response = http.post("/v1/chat/completions",
                                 json={"model": "tiny", "messages": messages, "max_tokens": 4, **body})
            assert response.status_code == 400 and said in response.json()["error"]["message"], response.text


def test_too_many_requests_in_flight_is_a_429(trained, served):
    from starlette.testclient import TestClient
    _, _, (model, params, tokenizer), _ = served
    engine = Engine(model, params, CONTEXT, rows=1)  # not started: what is submitted stays in flight
    engine.submit(Request([1, 2], 2))
    with TestClient(create_app(Server(engine, tokenizer, "tiny", max_pending=1))) as client:
        response = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
    assert response.status_code == 429 and response.json()["error"]["type"] == "rate_limit_error"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_llm_jax_serve_answers_on_loopback_and_stops_on_sigint(trained):
    _, workdir = trained
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llm_jax", "serve", "--workdir", workdir, "--port", str(port),
                             "--max-batch", "2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=120, max_retries=0)
        out = client.completions.create(model=os.path.basename(workdir), prompt="ROMEO:", max_tokens=4, temperature=0)
        assert out.choices[0].finish_reason in ("length", "stop") and out.usage.completion_tokens <= 4
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    assert f"http://127.0.0.1:{port}/v1" in output, output
