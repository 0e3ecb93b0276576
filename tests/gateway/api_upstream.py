"""A vLLM 0.32 stand-in on raw sockets for the API-edge tests (tests/gateway/test_edges_api.py).

Runs in a thread of the test process on 127.0.0.1 (free port). What it mirrors, per model name:
  ok            chat/completions (unary, SSE with usage), /v1/embeddings (EmbeddingResponse of
                vllm/entrypoints/pooling/embed/protocol.py) and /v1/responses (ResponsesResponse, and
                the typed SSE events of vllm/entrypoints/openai/responses/api_router.py: `event:` lines,
                no [DONE])
  too-long      vLLM's context-length refusal: HTTP 400 with its ErrorResponse
                (vllm/entrypoints/serve/exception_handling/error_response.py: type BadRequestError,
                integer code) and the message of vllm/renderers/params.py `_token_len_check`
  hang-headers  reads the request, never answers; records when the gateway drops the connection
  (any other)   404 NotFoundError, as vLLM's `_check_model` (vllm/entrypoints/serve/engine/serving.py)
A chat stream carries its usage chunk only when `stream_options.include_usage` asks for it.
/v1/models reports `max_model_len` (CONTEXT) as vLLM does. Every request body is kept (`bodies`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

CONTEXT = 4096
MODELS = ["ok", "too-long", "hang-headers"]
TOO_LONG = (
    "This model's maximum context length is 4096 tokens. However, your prompt contains 5000 input tokens, "
    "which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. "
    "(parameter=input_tokens, value=5000)"
)


def _http(status: str, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status.encode(),
        ctype,
        len(body),
        body,
    )


def _sse_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _response(text: str, usage: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "resp_1",
        "object": "response",
        "created_at": int(time.time()),
        "model": "ok",
        "status": "completed",
        "output": [
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "background": False,
        "max_output_tokens": 16,
        "service_tier": "auto",
        "truncation": "disabled",
    }
    if usage:
        out["usage"] = {
            "input_tokens": 5,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 8,
        }
    return out


class ApiUpstream:
    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self.dropped: dict[str, float] = {}  # request id → when the gateway closed a hung connection
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> ApiUpstream:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(5)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def last(self, path: str) -> dict[str, Any]:
        return [b for p, b in self.bodies if p == path][-1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(1000):  # keep-alive: bounded number of exchanges per connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._reply(path, headers, raw, reader, writer):
                    return
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _reply(
        self, path: str, headers: dict[str, str], raw: bytes, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        if path == "/health":
            w.write(_http("200 OK", b""))
            return True
        if path == "/v1/models":
            data = [{"id": m, "object": "model", "max_model_len": CONTEXT} for m in MODELS]
            w.write(_http("200 OK", json.dumps({"object": "list", "data": data}).encode()))
            return True
        body: dict[str, Any] = json.loads(raw)
        if body.get("max_tokens") == 1 and path == "/v1/completions":  # the gateway's readiness probe
            w.write(_http("200 OK", json.dumps({"choices": [{"index": 0, "text": "pong"}]}).encode()))
            return True
        self.bodies.append((path, body))
        model = body["model"]
        if model not in MODELS:  # vllm/entrypoints/serve/engine/serving.py `_check_model`
            err = {
                "error": {
                    "message": f"The model `{model}` does not exist. Valid aliases: {', '.join(MODELS)}.",
                    "type": "NotFoundError",
                    "param": "model",
                    "code": 404,
                }
            }
            w.write(_http("404 Not Found", json.dumps(err).encode()))
            return True
        if model == "hang-headers":
            await reader.read()  # nothing comes: returns when the gateway closes the connection
            self.dropped[headers.get("x-request-id", "")] = time.monotonic()
            return False
        if model == "too-long":
            err = {"error": {"message": TOO_LONG, "type": "BadRequestError", "param": "input_tokens", "code": 400}}
            w.write(_http("400 Bad Request", json.dumps(err).encode()))
            return True
        stream = bool(body.get("stream"))
        if path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"index": i, "object": "embedding", "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))]
            usage = {"prompt_tokens": 4 * len(inputs), "total_tokens": 4 * len(inputs), "completion_tokens": 0}
            reply = {"id": "embd-1", "object": "list", "created": 0, "model": model, "data": data, "usage": usage}
            w.write(_http("200 OK", json.dumps(reply).encode()))
        elif path == "/v1/responses" and not stream:
            w.write(_http("200 OK", json.dumps(_response("a b c")).encode()))
        elif path == "/v1/responses":
            w.write(_sse_head())
            for seq, (kind, obj) in enumerate(
                (
                    ("response.created", {"response": {**_response("", usage=False), "status": "in_progress"}}),
                    (
                        "response.output_text.delta",
                        {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "a"},
                    ),
                    (
                        "response.output_text.delta",
                        {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": " b"},
                    ),
                    ("response.completed", {"response": _response("a b")}),
                )
            ):
                event = {"type": kind, "sequence_number": seq, **obj}
                w.write(_chunk(b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps(event).encode())))
                await w.drain()
            w.write(b"0\r\n\r\n")
        elif stream:
            w.write(_sse_head())
            for text in ("a", " b"):
                delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
                w.write(
                    _chunk(
                        b"data: %s\n\n" % json.dumps({"id": "x", "object": "chat.completion.chunk", **delta}).encode()
                    )
                )
            # Only when asked (vllm/entrypoints/serve/utils/api_utils.py `should_include_usage`).
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
                w.write(_chunk(b"data: %s\n\n" % json.dumps({"id": "x", "choices": [], "usage": usage}).encode()))
            w.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        else:
            message = {"role": "assistant", "content": "a b c"}
            reply = {
                "id": "x",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
            w.write(_http("200 OK", json.dumps(reply).encode()))
        return True
