"""The SSE relay of a streamed generation: complete events forwarded as they arrive, usage and
in-band errors read on the way, a broken stream ended with an error event; and the watch for a
client that leaves, from the moment the request goes upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Receive

from app.gateway.errors import sse_error_event, upstream_error_body
from app.gateway.metrics import UPSTREAM_ERRORS
from app.gateway.request_ctx import Ctx
from app.gateway.upstream import (
    TRANSPORT_ERRORS,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTooLargeError,
    upstream_error,
)

if TYPE_CHECKING:
    from app.gateway.app import Gateway


def sse_data(event: bytes) -> bytes | None:
    """The data of one SSE event (its `data:` lines joined), or None if it has none (a comment)."""
    if event.startswith(b"data:") and b"\n" not in event:
        data = event[5:]
        return data[1:] if data.startswith(b" ") else data
    lines = [ln[5:] for ln in event.split(b"\n") if ln.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(ln[1:] if ln.startswith(b" ") else ln for ln in lines)


# Responses API streams (vllm/entrypoints/openai/responses/api_router.py) carry `event: <type>` lines
# and end with one of these events, without `data: [DONE]`.
RESPONSE_TERMINAL = frozenset({b"response.completed", b"response.incomplete", b"response.failed"})


class DisconnectWatch:
    """Runs beside a streamed request from the moment it goes upstream. A client that leaves while
    the upstream has not answered yet cancels the request's task (dropping the upstream connection,
    which aborts the request in vLLM); once the relay runs, it ends the relay instead."""

    def __init__(self, receive: Receive, task: asyncio.Task[Any], ctx: Ctx) -> None:
        self.receive = receive
        self.task = task
        self.ctx = ctx
        self.relay: StreamRelay | None = None

    async def run(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.ctx.disconnected = True
        if self.relay is None:
            self.task.cancel()
        elif not self.relay.finished:
            self.relay.disconnect()


class StreamRelay:
    """Forwards complete SSE events as they arrive, reads usage on the way, and ends a
    broken stream with an error event. close() is idempotent and runs on every path."""

    def __init__(self, gw: Gateway, ctx: Ctx, r: UpstreamResponse, strip_usage: bool, responses: bool = False) -> None:
        self.gw = gw
        self.ctx = ctx
        self.r = r
        self.strip_usage = strip_usage
        self.responses = responses  # a Responses API stream: typed events, no [DONE]
        self.chunks = 0
        self.pieces: list[str] | None = [] if ctx.text is not None else None
        self._closed = False
        self._complete = False
        self.finished = False  # the last byte went to the client
        self.disconnected = False

    def disconnect(self) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self.ctx.status, self.ctx.error = 499, "client_closed"
        self.r.close()  # this is what cancels the request in vLLM

    async def events(self) -> AsyncGenerator[bytes, None]:
        """Complete SSE events (LF or CRLF delimited, `data:` with or without a space), batched per read."""
        ctx = self.ctx
        buf = b""
        pending_cr = b""
        done = False
        inspect_all = self.pieces is not None
        responses = self.responses
        cap = self.gw.s.upstream_max_response_bytes
        size = 0
        try:
            async for raw in self.r.content.iter_any():
                size += len(raw)
                if size > cap:
                    raise UpstreamTooLargeError(f"stream larger than {cap} bytes")
                if pending_cr or b"\r" in raw:
                    # CRLF or CR line ends (SSE allows all three): normalise to LF, keeping a
                    # trailing CR back in case its LF comes with the next read.
                    raw = pending_cr + raw
                    pending_cr = b""
                    if raw.endswith(b"\r"):
                        raw, pending_cr = raw[:-1], b"\r"
                    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                buf += raw
                end = buf.rfind(b"\n\n")
                if end < 0:
                    continue
                block, buf = buf[: end + 2], buf[end + 2 :]
                out: list[bytes] = []
                for event in block.split(b"\n\n"):
                    if not event:
                        continue
                    if done:
                        continue  # nothing after [DONE] reaches the client
                    data = sse_data(event)
                    if data == b"[DONE]":
                        done = True
                    elif responses:
                        if data is not None and (
                            inspect_all or event.startswith((b"event: response.", b"event: error"))
                        ):
                            done = self._inspect_response(event, data) or done
                    elif data is not None and (inspect_all or b'"usage"' in data or b'"error"' in data):
                        kept = self._inspect(event, data)
                        if kept is None:
                            continue
                        event = kept
                    self.chunks += 1
                    out.append(event + b"\n\n")
                if out:
                    if ctx.ttft is None and not self.disconnected:
                        ctx.ttft = time.perf_counter() - ctx.t0
                        self.gw.ttft_child(ctx.model or "-").observe(ctx.ttft)
                    yield b"".join(out)
            if not done:
                raise UpstreamProtocolError("stream ended without [DONE]")
            self._complete = True
        except TRANSPORT_ERRORS as exc:
            if self.disconnected:
                return  # nobody to tell
            err = upstream_error(exc)
            ctx.status, ctx.error = err.status, err.kind
            yield sse_error_event(
                err.status, "The model server stream broke off: " + err.message, err.code or "upstream_error"
            )
            yield b"data: [DONE]\n\n"
        finally:
            await self.close()

    def _inspect(self, event: bytes, data: bytes) -> bytes | None:
        """Read usage, errors (and text if audited) from one event; None = drop it (usage the client did not ask for)."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(obj, dict):
            return event
        if "error" in obj:
            # vLLM reports an engine failure mid-stream as an error event: the request failed.
            err = obj["error"]
            code = err.get("code") if isinstance(err, dict) else None
            status = code if isinstance(code, int) and 400 <= code <= 599 else 502
            self.ctx.status, self.ctx.error = (502 if status >= 500 else status), "upstream_stream_error"
            UPSTREAM_ERRORS.labels("stream_error").inc()
            # In OpenAI's shape, as unary errors are (vLLM's is {"type": "BadRequestError", "code": 400}).
            return b"data: " + upstream_error_body(status, data, self.ctx.route)
        choices = obj.get("choices") or []
        if self.pieces is not None:
            for c in choices:
                if isinstance(c, dict):
                    delta = c.get("delta")
                    piece = delta.get("content") if isinstance(delta, dict) else c.get("text")
                    if isinstance(piece, str):
                        self.pieces.append(piece)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.ctx.prompt_tokens = usage.get("prompt_tokens")
            self.ctx.completion_tokens = usage.get("completion_tokens")
        if self.strip_usage and isinstance(usage, dict):
            if not choices:
                return None
            del obj["usage"]
            return b"data: " + orjson.dumps(obj)
        return event

    def _inspect_response(self, event: bytes, data: bytes) -> bool:
        """Read one Responses API event (text if audited, usage, errors); True at the terminal event."""
        kind = event[7 : event.find(b"\n")] if event.startswith(b"event: ") else b""
        if kind == b"response.output_text.delta" and self.pieces is not None:
            obj = _loads(data)
            delta = obj.get("delta") if obj else None
            if isinstance(delta, str):
                self.pieces.append(delta)
            return False
        if kind == b"error":
            self.ctx.status, self.ctx.error = 502, "upstream_stream_error"
            UPSTREAM_ERRORS.labels("stream_error").inc()
            return True
        if kind not in RESPONSE_TERMINAL:
            return False
        obj = _loads(data)
        response = obj.get("response") if obj else None
        usage = response.get("usage") if isinstance(response, dict) else None
        if isinstance(usage, dict):
            self.ctx.prompt_tokens = usage.get("input_tokens")
            self.ctx.completion_tokens = usage.get("output_tokens")
        if kind == b"response.failed":
            self.ctx.status, self.ctx.error = 502, "upstream_stream_error"
            UPSTREAM_ERRORS.labels("stream_error").inc()
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ctx = self.ctx
        if self._complete:
            self.r.release()  # back to the pool
        else:
            self.r.close()  # drop the connection: this is what cancels the request in vLLM
        if ctx.completion_tokens is None and self.chunks:
            ctx.completion_tokens = max(0, self.chunks - 1)  # fallback: ~1 token per event
        if self.pieces is not None and ctx.text is not None:
            ctx.text["completion"] = "".join(self.pieces)
        self.gw._settle(ctx)
        self.gw._finish(ctx)


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
