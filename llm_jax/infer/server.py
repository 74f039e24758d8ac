"""`llm-jax serve`: an OpenAI-compatible HTTP API over the continuous-batching engine (FastAPI + uvicorn).

Routes: `POST /v1/completions`, `POST /v1/chat/completions` (the model's chat template, `data/chat.py`),
`stream: true` as server-sent events (`data: {...}` chunks, then `data: [DONE]`), `GET /v1/models`,
`GET /health`. Every request becomes engine requests (one per prompt and per `n`); the engine runs on its own
thread and hands tokens to the event loop. A chat request with `tools` (OpenAI function specs; `tool_choice`
auto / required / none / a named function) is decoded by `toolcall.decode_turn` instead, one at a time on a worker
thread, the call constrained to the tools' schemas: the reply carries `tool_calls` in OpenAI's shape
(`finish_reason: "tool_calls"`); assistant messages with `tool_calls` and `tool` messages are shown to the model in
the protocol of `toolcall.py`. Errors are OpenAI's shape, `{"error": {"message", "type", "param",
"code"}}`, with a 4xx status for the client's mistakes (malformed JSON, a field of the wrong type, a prompt longer
than the context, `max_tokens` <= 0, an unknown model, too many requests at once: 429) and never stop the server.
The server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Literal

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from llm_jax.errors import UserError
from llm_jax.data import chat
from llm_jax.infer import toolcall
from llm_jax.infer.engine import MAX_STOP_IDS, Engine, Request
from llm_jax.infer.stops import StopText

MAX_STOP_STRINGS = 4
MAX_N = 8


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code


def error_response(status: int, message: str, kind: str = "invalid_request_error", param=None, code=None):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


class _Body(BaseModel):
    # Fields OpenAI clients send that this server does not use are ignored; a known field of the wrong type is a
    # 400 (strict: "16" is not a number).
    model_config = ConfigDict(extra="ignore", strict=True)
    model: str | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)  # vLLM's extension
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**32)


class CompletionBody(_Body):
    prompt: str | list[str]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = None
    tool_calls: list[dict] | None = None   # an assistant's earlier calls
    tool_call_id: str | None = None        # a tool message: the call it answers


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None


def _as_text(m: Message, i: int) -> dict:
    """A message as {"role", "content"} text: an assistant's tool_calls written in the call protocol."""
    content = m.content or ""
    for j, call in enumerate(m.tool_calls or []):
        fn = call.get("function") if isinstance(call, dict) else None
        try:
            arguments = json.loads(fn["arguments"]) if isinstance(fn["arguments"], str) else fn["arguments"]
            content += toolcall.format_call(fn["name"], arguments)
        except (TypeError, KeyError, ValueError):
            raise ApiError(400, f"messages[{i}].tool_calls[{j}] must be {{'type': 'function', 'function': "
                                f"{{'name', 'arguments': a JSON string}}}}", param="messages") from None
    if m.content is None and not m.tool_calls:
        raise ApiError(400, f"messages[{i}].content is missing", param="messages")
    return {"role": m.role, "content": content}


class Server:
    """The app's state: the engine, the tokenizer, the model's name, the template and the limits."""

    def __init__(self, engine: Engine, tokenizer, name: str, *, chat_template: str | None = None,
                 max_pending: int = 64):
        self.engine, self.tokenizer, self.name = engine, tokenizer, name
        self.chat_template, self.max_pending = chat_template, max_pending
        self.created = int(time.time())
        self.stop_ids = () if tokenizer.eos_id is None else (int(tokenizer.eos_id),)
        self.tool_lock = asyncio.Lock()  # tool-call turns decode one at a time, beside the engine

    def special_text(self, role: str) -> str:
        i = self.tokenizer.special.get(role)
        return "" if i is None else self.tokenizer.decode([i])

    def requests(self, body: _Body, prompts: list[str], max_tokens: int | None,
                 field: str) -> list[tuple[Request, StopText]]:
        if body.model not in (None, self.name):
            raise ApiError(404, f"the model {body.model!r} does not exist; this server serves {self.name!r}",
                           param="model", code="model_not_found")
        if body.temperature < 0:
            raise ApiError(400, f"temperature must be >= 0, got {body.temperature}", param="temperature")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOP_STRINGS or any(not s for s in stops):
            raise ApiError(400, f"stop takes at most {MAX_STOP_STRINGS} non-empty strings", param="stop")
        max_tokens = 16 if max_tokens is None else max_tokens
        if max_tokens <= 0:
            raise ApiError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
        out = []
        for p, prompt in enumerate(prompts):
            ids = self.tokenizer.encode(prompt)
            for i in range(body.n):
                text = StopText(self.tokenizer, stops)
                seed = (body.seed if body.seed is not None else uuid.uuid4().int % 2**31) + i
                request = Request(ids, max_tokens, body.temperature, body.top_k, body.top_p, seed % 2**32,
                                  self.stop_ids[:MAX_STOP_IDS])
                try:
                    self.engine.check(request)
                except UserError as e:
                    where = f"{field}[{p}]" if len(prompts) > 1 else field
                    raise ApiError(400, f"{where}: {e}", param=field,
                                   code="context_length_exceeded" if ids else None) from None
                out.append((request, text))
        if self.engine.pending() + len(out) > self.max_pending:
            raise ApiError(429, f"too many requests in flight ({self.engine.pending()} of {self.max_pending}); "
                           f"retry shortly", kind="rate_limit_error")
        if self.engine.error is not None:
            raise ApiError(503, f"the engine has stopped after an error: {self.engine.error}", kind="server_error")
        return out


def _submit(server: Server, pairs, loop) -> asyncio.Queue:
    """Submits every request; the returned queue gets (index, finished) on each token and at each finish."""
    events: asyncio.Queue = asyncio.Queue()

    def tell(index: int, finished: bool) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, (index, finished))
        except RuntimeError:  # the event loop has closed (the server is shutting down): nobody is listening
            pass

    for index, (request, text) in enumerate(pairs):
        def on_token(r, token, index=index, text=text):
            keep = text.update(r, token)
            tell(index, False)
            return keep
        request.on_token = on_token
        request.on_finish = lambda r, index=index: tell(index, True)
        server.engine.submit(request)
    return events


def _cancel_unfinished(server: Server, pairs) -> None:
    for request, _ in pairs:
        if not request.done.is_set():
            server.engine.cancel(request)


def _finish_reason(request: Request, text: StopText) -> str:
    if request.finish_reason == "error":
        raise ApiError(500, "generation failed inside the engine (see the server's log)", kind="server_error")
    return "length" if request.finish_reason == "length" and not text.stopped else "stop"


def _usage(pairs) -> dict:
    prompt = sum(len(r.prompt_ids) for r, _ in pairs)
    completion = sum(len(r.new_ids) for r, _ in pairs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="llm-jax", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(_, e: ApiError):
        return error_response(e.status, e.message, e.kind, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, e: RequestValidationError):
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        if first.get("type") == "json_invalid":
            return error_response(400, f"the request body is not valid JSON: {first.get('msg')}")
        return error_response(400, f"{where or 'body'}: {first.get('msg')}", param=where or None)

    @app.exception_handler(HTTPException)
    async def _http(_, e: HTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return error_response(e.status_code, str(e.detail), kind)

    @app.get("/health")
    async def health():
        if server.engine.error is not None:
            return error_response(503, f"engine stopped: {server.engine.error}", "server_error")
        return {"status": "ok", "pending": server.engine.pending()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": server.created,
                                            "owned_by": "llm-jax"}]}

    async def respond(body: _Body, prompts: list[str], max_tokens, kind: str):
        loop = asyncio.get_running_loop()
        pairs = server.requests(body, prompts, max_tokens, "messages" if kind == "chat" else "prompt")
        events = _submit(server, pairs, loop)
        ident = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        if body.stream:
            return StreamingResponse(_stream(server, pairs, events, ident, kind), media_type="text/event-stream")
        finished = 0
        try:
            while finished < len(pairs):
                _, done = await events.get()
                finished += done
        finally:  # the client went away before the answer: stop generating for it
            _cancel_unfinished(server, pairs)
        choices = []
        for index, (request, text) in enumerate(pairs):
            reason = _finish_reason(request, text)
            if kind == "chat":
                choices.append({"index": index, "message": {"role": "assistant", "content": text.text},
                                "finish_reason": reason, "logprobs": None})
            else:
                choices.append({"index": index, "text": text.text, "finish_reason": reason, "logprobs": None})
        return {"id": ident, "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": int(time.time()), "model": server.name, "choices": choices, "usage": _usage(pairs)}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody):
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt is an empty list", param="prompt")
        return await respond(body, prompts, body.max_tokens, "text")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody):
        tools = None
        if body.tools is not None:
            try:
                tools = toolcall.check_tools(body.tools)
                toolcall.choose(tools, body.tool_choice)
            except toolcall.ToolSpecError as e:
                raise ApiError(400, str(e), param="tools") from None
        messages = [_as_text(m, i) for i, m in enumerate(body.messages)]
        try:
            prompt = chat.render(server.chat_template, messages, server.special_text("bos"),
                                 server.special_text("eos"), tools=body.tools)
        except UserError as e:
            raise ApiError(400, str(e), param="messages") from None
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        if tools is not None:
            return await respond_with_tools(body, tools, prompt, max_tokens)
        return await respond(body, [prompt], max_tokens, "chat")

    async def respond_with_tools(body: ChatBody, tools: list[dict], prompt: str, max_tokens):
        if body.stream or body.n != 1 or body.stop:
            raise ApiError(400, "a request with tools takes no stream, n > 1 or stop (not supported with tools)",
                           param="tools")
        pairs = server.requests(body, [prompt], max_tokens, "messages")  # the same checks as any request
        request = pairs[0][0]
        engine = server.engine
        async with server.tool_lock:
            try:
                turn = await asyncio.get_running_loop().run_in_executor(None, lambda: toolcall.decode_turn(
                    engine.model, engine.params, engine.max_len, server.tokenizer, request.prompt_ids, tools,
                    tool_choice=body.tool_choice, max_tokens=request.max_tokens, temperature=request.temperature,
                    seed=request.seed, lead=chat.reply_lead(server.chat_template, server.special_text("bos"),
                                                            server.special_text("eos"))))
            except Exception as e:
                raise ApiError(500, f"tool-call decoding failed: {type(e).__name__}: {e}", kind="server_error") \
                    from None
        message = {"role": "assistant", "content": turn.content if turn.content or turn.call is None else None}
        if turn.call is not None:
            message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                      "function": {"name": turn.call["name"],
                                                   "arguments": json.dumps(turn.call["arguments"])}}]
        prompt_tokens = len(request.prompt_ids)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": server.name, "choices": [{"index": 0, "message": message, "finish_reason": turn.finish,
                                                   "logprobs": None}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": turn.tokens,
                          "total_tokens": prompt_tokens + turn.tokens}}

    return app


def _chunk(ident: str, kind: str, index: int, text: str | None, reason: str | None, name: str, first: bool) -> str:
    if kind == "chat":
        delta = ({"role": "assistant", "content": ""} if first else {}) | ({"content": text} if text else {})
        choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": text or "", "finish_reason": reason, "logprobs": None}
        obj = "text_completion"
    return "data: " + json.dumps({"id": ident, "object": obj, "created": int(time.time()), "model": name,
                                  "choices": [choice]}) + "\n\n"


async def _stream(server: Server, pairs, events: asyncio.Queue, ident: str, kind: str):
    sent = [0] * len(pairs)
    finished = 0
    try:
        if kind == "chat":
            for index in range(len(pairs)):
                yield _chunk(ident, kind, index, None, None, server.name, first=True)
        while finished < len(pairs):
            index, done = await events.get()
            request, text = pairs[index]
            if done:
                finished += 1
                if request.finish_reason == "error":
                    yield "data: " + json.dumps({"error": {"message": "generation failed inside the engine",
                                                           "type": "server_error", "param": None,
                                                           "code": None}}) + "\n\n"
                    continue
            shown = text.settled(done)
            if len(shown) > sent[index]:
                yield _chunk(ident, kind, index, shown[sent[index]:], None, server.name, first=False)
                sent[index] = len(shown)
            if done:
                yield _chunk(ident, kind, index, None, _finish_reason(request, text), server.name, first=False)
        yield "data: [DONE]\n\n"
    finally:  # the client went away: stop generating for it
        _cancel_unfinished(server, pairs)


def serve(engine: Engine, tokenizer, name: str, *, host: str = "127.0.0.1", port: int = 8000,
          chat_template: str | None = None, max_pending: int = 64, log=print) -> None:
    """Runs the server until interrupted (the engine on a background thread, uvicorn on this one)."""
    import uvicorn
    app = create_app(Server(engine, tokenizer, name, chat_template=chat_template, max_pending=max_pending))
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(f"warning: serving on {host}, reachable from other machines; there is no authentication")
    engine.start()
    log(f"serving {name!r} on http://{host}:{port}/v1 ({len(engine.running)} rows, {engine.max_len} tokens "
        f"per sequence); Ctrl-C stops")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        engine.stop()
