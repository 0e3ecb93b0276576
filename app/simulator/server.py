"""HTTP surface of the simulator: vLLM's OpenAI-compatible API, /health, /metrics and /admin.

Built on bare Starlette with orjson and hand-written validation rather than FastAPI
models: the simulator is the baseline of the gateway benchmark, so its own per-request
overhead has to stay far below the gateway's.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.simulator.config import VLLM_COMPAT_VERSION, FaultsUpdate, SimulatorConfig
from app.simulator.engine import Choice, Engine, FaultDecision, Sequence, estimate_tokens
from app.simulator.metrics import SimMetrics

log = logging.getLogger(__name__)

# Exit status of an injected crash, distinct from start-up failures (2 = bad flags).
CRASH_EXIT_CODE = 70

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "Unauthorized",
    404: "NotFoundError",
    500: "InternalServerError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}
_JSON = "application/json"
MAX_N = 128


class BadRequest(Exception):
    """A request vLLM would reject; carries the HTTP status and the offending parameter."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


class _StreamCutoff(Exception):
    """Raised inside a stream to drop the connection mid-body (fault injection)."""


def error_json(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """vLLM's (0.10+) OpenAI-shaped error body."""
    err_type = _ERROR_TYPES.get(status) or HTTPStatus(status).phrase.replace(" ", "")
    return {"error": {"message": message, "type": err_type, "param": param, "code": status}}


def error_response(message: str, status: int, param: str | None = None) -> Response:
    return Response(orjson.dumps(error_json(message, status, param)), status_code=status, media_type=_JSON)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type=_JSON)


def _crash(reason: str) -> None:
    """Die like a crashed engine: no graceful shutdown, open connections are reset."""
    log.error("simulated crash: %s; exiting with status %d", reason, CRASH_EXIT_CODE)
    for h in logging.getLogger().handlers:
        h.flush()
    sys.stderr.flush()
    os._exit(CRASH_EXIT_CODE)


# -- request parsing ----------------------------------------------------------------------


@dataclass
class GenRequest:
    """The fields of a chat or completions request the simulator acts on."""

    chat: bool
    prompt_key: str
    prompt_tokens: int
    max_tokens: int
    n: int
    stream: bool
    include_usage: bool
    seed: int | None
    stop: list[str]


def _opt_int(body: dict[str, Any], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{name} must be an integer", name)
    if value < minimum:
        raise BadRequest(f"{name} must be at least {minimum}, got {value}.", name)
    return value


def _message_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest("only text content parts are supported", f"messages[{index}].content")
            parts.append(part["text"])
        return "\n".join(parts)
    raise BadRequest("content must be a string or a list of parts", f"messages[{index}].content")


def parse_request(body: Any, config: SimulatorConfig, chat: bool) -> GenRequest:
    """Validate like vLLM does (400 + param name) and estimate the prompt size."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != config.model:
        raise BadRequest(f"The model `{model}` does not exist.", "model", status=404)

    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list", "messages")
        texts = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
                raise BadRequest("each message needs a string role", f"messages[{i}].role")
            texts.append(msg["role"] + ":" + _message_text(msg.get("content"), i))
        # A chat template adds a few tokens per message plus the assistant header.
        prompt_tokens = sum(estimate_tokens(t) + 3 for t in texts) + 3
        prompt_key = "\n".join(texts)
        max_tokens = _opt_int(body, "max_completion_tokens", 1)
        if max_tokens is None:
            max_tokens = _opt_int(body, "max_tokens", 1)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            prompt_key, prompt_tokens = prompt, max(1, estimate_tokens(prompt))
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompt_key, prompt_tokens = ",".join(map(str, prompt)), len(prompt)
        else:
            raise BadRequest(
                "prompt must be a string or a list of token ids (batched prompts are not simulated)", "prompt"
            )
        max_tokens = _opt_int(body, "max_tokens", 1)

    if max_tokens is None:
        max_tokens = min(config.default_max_tokens, max(1, config.max_model_len - prompt_tokens))
    if prompt_tokens + max_tokens > config.max_model_len:
        raise BadRequest(
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum context "
            f"length is {config.max_model_len} tokens and your request has {prompt_tokens} input tokens "
            f"({max_tokens} > {config.max_model_len} - {prompt_tokens}).",
            "max_tokens",
        )
    n = _opt_int(body, "n", 1) or 1
    if n > MAX_N:
        # vLLM has no fixed cap, but an unbounded n would let one request exhaust the simulator's memory.
        raise BadRequest(f"n must be at most {MAX_N}, got {n}.", "n")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean", "stream")
    stream_options = body.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not stream:
            raise BadRequest("Stream options can only be defined when `stream=True`.", "stream_options")
        if not isinstance(stream_options, dict):
            raise BadRequest("stream_options must be an object", "stream_options")
        include_usage = bool(stream_options.get("include_usage"))
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = stop
    else:
        raise BadRequest("stop must be a string or a list of strings", "stop")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise BadRequest("seed must be an integer", "seed")
    return GenRequest(chat, prompt_key, prompt_tokens, max_tokens, n, stream, include_usage, seed, stops)


# -- response shapes ----------------------------------------------------------------------


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def full_response(req: GenRequest, model: str, choices: list[Choice], completion_tokens: int) -> dict[str, Any]:
    created = int(time.time())
    usage = _usage(req.prompt_tokens, completion_tokens)
    if req.chat:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": "".join(c.tokens), "tool_calls": []},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                    "stop_reason": None,
                }
                for i, c in enumerate(choices)
            ],
            "usage": usage,
        }
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "text": "".join(c.tokens),
                "logprobs": None,
                "finish_reason": c.finish_reason,
                "stop_reason": None,
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage,
    }


class _Chunks:
    """Serialises the SSE events of one stream (chat.completion.chunk or text_completion)."""

    def __init__(self, req: GenRequest, model: str) -> None:
        self.chat = req.chat
        self.base: dict[str, Any] = {
            "id": f"{'chatcmpl' if req.chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk" if req.chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + orjson.dumps({**self.base, "choices": choices, **extra}) + b"\n\n"

    def role(self, n: int) -> bytes:
        """vLLM's chat streams open with an empty assistant delta per choice."""
        return b"".join(
            self._event(
                [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
            )
            for i in range(n)
        )

    def token(self, index: int, text: str, finish_reason: str | None) -> bytes:
        if self.chat:
            choice = {"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
        if finish_reason is not None:
            choice["stop_reason"] = None
        return self._event([choice])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return self._event([], usage=_usage(prompt_tokens, completion_tokens))


DONE = b"data: [DONE]\n\n"


# -- the app ------------------------------------------------------------------------------


class Simulator:
    """Request handlers bound to one engine and config."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.metrics = SimMetrics(config.model, config.max_model_len)
        self.engine = Engine(config, self.metrics)
        self.created = int(time.time())

    # -- plain endpoints

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return _json({"version": VLLM_COMPAT_VERSION, "simulator": True})

    async def models(self, request: Request) -> Response:
        name = self.config.model
        card = {
            "id": name,
            "object": "model",
            "created": self.created,
            "owned_by": "vllm",
            "root": name,
            "parent": None,
            "max_model_len": self.config.max_model_len,
            "permission": [
                {
                    "id": f"modelperm-{uuid.uuid4().hex}",
                    "object": "model_permission",
                    "created": self.created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        return _json({"object": "list", "data": [card]})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- admin

    def _admin_denied(self, request: Request) -> Response | None:
        token = self.config.admin_token
        if not token:
            return None
        given = request.headers.get("authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode()):
            return None
        return error_response("admin token missing or wrong", 401)

    def _faults_view(self) -> dict[str, Any]:
        return {**self.engine.faults.model_dump(), "requests_seen": self.engine.requests_seen}

    async def get_faults(self, request: Request) -> Response:
        return self._admin_denied(request) or _json(self._faults_view())

    async def put_faults(self, request: Request) -> Response:
        if denied := self._admin_denied(request):
            return denied
        try:
            update = FaultsUpdate.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"]) or None
            return error_response(f"invalid faults: {first['msg']}", 400, param)
        self.engine.update_faults(update)
        return _json(self._faults_view())

    async def crash(self, request: Request) -> Response:
        if denied := self._admin_denied(request):
            return denied
        # Answer first so the caller knows the crash was requested, then die.
        asyncio.get_running_loop().call_later(0.05, _crash, "POST /admin/crash")
        return _json({"crashing": True, "exit_code": CRASH_EXIT_CODE}, status=202)

    # -- inference

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def _generate(self, request: Request, chat: bool) -> Response:
        arrival = time.perf_counter()
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return error_response(f"invalid JSON body: {exc}", 400)
        try:
            req = parse_request(body, self.config, chat)
        except BadRequest as exc:
            return error_response(exc.message, exc.status, exc.param)

        engine = self.engine
        decision = engine.decide_faults()
        if decision.crash:
            _crash(f"crash_after_requests={engine.faults.crash_after_requests} reached")
        if engine.faults.added_latency_ms > 0:
            await asyncio.sleep(engine.faults.added_latency_ms / 1000.0)
        if decision.error:
            status = engine.faults.error_status
            return error_response(f"injected fault: HTTP {status}", status)
        if decision.hang:
            await _wait_for_disconnect(request)
            return Response(status_code=499)

        choices = engine.generate(req.prompt_key, req.seed, req.max_tokens, req.n, req.stop)
        if req.stream:
            return StreamingResponse(self._stream(req, choices, decision, arrival), media_type="text/event-stream")

        # vLLM's @with_cancellation (vllm/entrypoints/serve/utils/api_utils.py): the handler races a
        # listener for http.disconnect; when the client leaves first the handler is cancelled, the
        # engine aborts the request and it counts as vllm:request_success{finished_reason="abort"}.
        handler = asyncio.create_task(self._unary(req, choices, arrival))
        listener = asyncio.create_task(_wait_for_disconnect(request))
        done, _ = await asyncio.wait((handler, listener), return_when=asyncio.FIRST_COMPLETED)
        if handler in done:
            listener.cancel()
            return handler.result()
        handler.cancel()
        await asyncio.gather(handler, return_exceptions=True)  # the abort is recorded before we return
        return Response(status_code=499)  # nobody reads it: the client is gone

    async def _unary(self, req: GenRequest, choices: list[Choice], arrival: float) -> Response:
        engine = self.engine
        async with engine.admitted(req.prompt_tokens, arrival) as seq:
            reason = "abort"  # unless the generation runs to its end
            try:
                await engine.wait_first_token(seq)
                steps = max(len(c.tokens) for c in choices)
                last = seq.first_token
                engine.add_generated(seq, sum(1 for c in choices if c.tokens))
                for step in range(1, steps):
                    last = await engine.next_token_at(seq, last)
                    engine.add_generated(seq, sum(1 for c in choices if len(c.tokens) > step))
                reason = choices[0].finish_reason
            finally:
                engine.finish(seq, req.prompt_tokens, seq.generated, req.max_tokens, reason)
        completion_tokens = sum(len(c.tokens) for c in choices)
        return _json(full_response(req, self.config.model, choices, completion_tokens))

    async def _stream(
        self, req: GenRequest, choices: list[Choice], decision: FaultDecision, arrival: float
    ) -> AsyncIterator[bytes]:
        engine = self.engine
        chunks = _Chunks(req, self.config.model)
        # With zero latency settings every event of the stream goes out in one write:
        # still one SSE event per token, but no per-token trip through the event loop.
        batch = engine.zero_latency
        steps = max(len(c.tokens) for c in choices)
        emitted = 0
        reason = "abort"
        seq: Sequence | None = None
        try:
            async with engine.admitted(req.prompt_tokens, arrival) as seq:
                await engine.wait_first_token(seq)
                last = seq.first_token
                buf: list[bytes] = [chunks.role(req.n)] if req.chat else []
                for step in range(max(steps, 1)):
                    if decision.cutoff_after is not None and step >= decision.cutoff_after:
                        if buf:
                            yield b"".join(buf)
                        async for tail in self._cut(decision):
                            yield tail
                        return
                    if step:
                        last = await engine.next_token_at(seq, last)
                    for i, c in enumerate(choices):
                        if step < len(c.tokens):
                            is_last = step == len(c.tokens) - 1
                            buf.append(chunks.token(i, c.tokens[step], c.finish_reason if is_last else None))
                            emitted += 1
                        elif step == 0:  # a choice that stopped before its first token
                            buf.append(chunks.token(i, "", c.finish_reason))
                    engine.add_generated(seq, emitted - seq.generated)
                    if not batch:
                        yield b"".join(buf)
                        buf.clear()
                reason = choices[0].finish_reason
                if req.include_usage:
                    buf.append(chunks.usage(req.prompt_tokens, emitted))
                buf.append(DONE)
                yield b"".join(buf)
        finally:
            # Runs on normal end, on cutoff and when the client disconnects (cancellation).
            if seq is not None:
                engine.finish(seq, req.prompt_tokens, emitted, req.max_tokens, reason)

    async def _cut(self, decision: FaultDecision) -> AsyncIterator[bytes]:
        if self.engine.faults.stream_cutoff_mode == "error":
            # What vLLM sends when the engine fails mid-generation: an error event, then [DONE].
            err = error_json(f"injected fault: stream cut after {decision.cutoff_after} tokens", 500)
            yield b"data: " + orjson.dumps(err) + b"\n\n" + DONE
            return
        log.info("injected fault: dropping stream after %s tokens", decision.cutoff_after)
        raise _StreamCutoff
        yield b""  # pragma: no cover - makes this an async generator


async def _wait_for_disconnect(request: Request) -> None:
    """A hung request: nothing is sent until the client gives up."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class _DropOnCutoff:
    """Turns an injected mid-stream cutoff into a dropped connection instead of a logged traceback.

    The app returns without finishing the response; the server then closes the connection,
    which the client sees as a truncated chunked body, as when a real upstream dies.
    """

    def __init__(self, app: ASGIApp, simulator: Simulator) -> None:
        self.app = app
        self.simulator = simulator  # lets in-process tests reach the engine and metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except _StreamCutoff:
            return
        except BaseExceptionGroup as group:
            _, rest = group.split(_StreamCutoff)
            if rest is not None:
                raise rest from None


def create_app(config: SimulatorConfig) -> _DropOnCutoff:
    """The simulator as an ASGI app (one engine per app; state is per process)."""
    sim = Simulator(config)
    routes = [
        Route("/health", sim.health, methods=["GET"]),
        Route("/ping", sim.health, methods=["GET", "POST"]),
        Route("/version", sim.version, methods=["GET"]),
        Route("/metrics", sim.metrics_endpoint, methods=["GET"]),
        Route("/v1/models", sim.models, methods=["GET"]),
        Route("/v1/chat/completions", sim.chat_completions, methods=["POST"]),
        Route("/v1/completions", sim.completions, methods=["POST"]),
        Route("/admin/faults", sim.get_faults, methods=["GET"]),
        Route("/admin/faults", sim.put_faults, methods=["PUT"]),
        Route("/admin/crash", sim.crash, methods=["POST"]),
    ]
    return _DropOnCutoff(Starlette(routes=routes), sim)
