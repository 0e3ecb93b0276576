"""The upstream hop to vLLM: a pooled HTTP/1.1 client per worker, and the mapping of its failures to 502/503/504.

Two clients with one interface, chosen by `GATEWAY_UPSTREAM_CLIENT`:
- `h1` (default): httptools-framed keep-alive pool (app/gateway/h1.py) — the measured reason it
  is the default is in that module and in `make bench-gateway`, which runs both;
- `aiohttp`: the maintained library client.
Both pass the same conformance suite (tests/gateway/test_upstream_conformance.py): interim 1xx
replies are skipped, bytes after a complete message never become the next request's reply, a
POST is never re-sent once written, waiting for a pooled connection is bounded
(`upstream_pool_timeout_seconds`, then 503), replies are capped at `upstream_max_response_bytes`
(then 502), and closing a response drops the connection, which aborts the request in vLLM.
Every upstream call (generation, health, model list, readiness probe) goes through the same pool,
so the probe sees what traffic sees.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import aiohttp
import orjson
from yarl import URL

from app.gateway.config import Settings
from app.gateway.errors import GatewayError
from app.gateway.h1 import (
    H1Pool,
    UpstreamBusyError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReadTimeout,
    UpstreamTooLargeError,
)
from app.gateway.metrics import UPSTREAM_ERRORS

__all__ = ["TRANSPORT_ERRORS", "UpstreamProtocolError", "UpstreamTooLargeError", "open_upstream"]

log = logging.getLogger(__name__)


# Transport failures of this hop; everything else is a bug and stays a 500.
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def upstream_error(exc: BaseException) -> GatewayError:
    """Translate a transport failure into the status a client should see."""
    if isinstance(exc, UpstreamBusyError | aiohttp.ConnectionTimeoutError):
        # No connection within the pool wait (all busy) or the connect timeout.
        kind, err = "unavailable", GatewayError(503, "The model server is busy or unavailable.", code="upstream_busy")
    elif isinstance(exc, UpstreamReadTimeout | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        kind, err = "timeout", GatewayError(504, "The model server did not answer in time.", code="upstream_timeout")
    elif isinstance(exc, UpstreamConnectError | aiohttp.ClientConnectorError | ConnectionRefusedError):
        kind, err = "unavailable", GatewayError(503, "The model server is unavailable.", code="upstream_unavailable")
    elif isinstance(exc, UpstreamTooLargeError):
        kind, err = "too_large", GatewayError(502, "The model server's reply is too large.", code="upstream_error")
    else:
        kind, err = (
            "protocol",
            GatewayError(502, "The model server closed the connection unexpectedly.", code="upstream_error"),
        )
    UPSTREAM_ERRORS.labels(kind).inc()
    log.warning("upstream %s: %s: %s", kind, type(exc).__name__, exc)
    err.kind = f"upstream_{kind}"
    return err


def bad_upstream(kind: str, message: str) -> GatewayError:
    UPSTREAM_ERRORS.labels(kind).inc()
    return GatewayError(502, message, code="upstream_error", kind=f"upstream_{kind}")


async def read_capped(r: UpstreamResponse, cap: int) -> bytes:
    """The whole body, or UpstreamTooLargeError as soon as it exceeds `cap` bytes."""
    if r.content_length is not None and r.content_length > cap:
        raise UpstreamTooLargeError(f"Content-Length {r.content_length} > {cap}")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await r.content.readany()
        if not chunk:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        size += len(chunk)
        if size > cap:
            raise UpstreamTooLargeError(f"reply larger than {cap} bytes")
        chunks.append(chunk)


# The list a successful unary reply must carry, per route (vLLM's response models:
# ChatCompletionResponse/CompletionResponse `choices`, EmbeddingResponse `data`, ResponsesResponse `output`).
_REPLY_LIST = {"/v1/embeddings": "data", "/v1/responses": "output"}


def reply_list(route: str) -> str:
    return _REPLY_LIST.get(route, "choices")


def reply_usage(route: str, payload: dict[str, Any]) -> tuple[Any, Any] | None:
    """(prompt tokens, completion tokens) of a unary reply, None if it reports no usage.
    The Responses API names them input/output tokens; embeddings have no completion."""
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    if route == "/v1/responses":
        return usage.get("input_tokens"), usage.get("output_tokens")
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


def reply_text(route: str, payload: dict[str, Any]) -> Any:
    """The generated text of a unary reply, for the audit line (AUDIT_INCLUDE_TEXT)."""
    if route == "/v1/embeddings":
        return None
    if route == "/v1/responses":
        return [
            part.get("text")
            for item in payload.get("output") or ()
            if isinstance(item, dict) and isinstance(item.get("content"), list)
            for part in item["content"]
            if isinstance(part, dict) and "text" in part
        ]
    return [
        (c.get("message") or {}).get("content") if "message" in c else c.get("text")
        for c in payload["choices"]
        if isinstance(c, dict)
    ]


class _Connector(aiohttp.TCPConnector):
    """A TCPConnector that never hands out a pooled connection on which bytes arrived while it
    was idle (an unsolicited or smuggled reply): that reply would become the next request's."""

    async def _get(self, key: Any, traces: list[Any]) -> Any:
        while True:
            conn = await super()._get(key, traces)
            if conn is None:
                return None
            proto = conn.protocol
            if proto is None or not proto.should_close:
                return conn
            log.warning("upstream sent bytes on an idle connection: dropped it")
            conn.close()


class UpstreamResponse(Protocol):
    """A streamed reply, as both clients return it."""

    status: int

    @property
    def content_length(self) -> int | None: ...

    @property
    def content(self) -> Any: ...  # .iter_any() / .readany()

    def release(self) -> None: ...

    def close(self) -> None: ...


class Upstream(Protocol):
    async def post(self, path: str, body: bytes, request_id: str) -> tuple[int, bytes]: ...

    async def open_stream(self, path: str, body: bytes, request_id: str) -> UpstreamResponse: ...

    async def request(
        self, method: str, path: str, *, timeout_s: float, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


def open_upstream(settings: Settings) -> Upstream:
    """The configured client; call inside the running event loop (lifespan)."""
    if settings.upstream_client == "aiohttp":
        return AiohttpUpstream(settings)
    return H1Upstream(settings)


class H1Upstream:
    """The default client (app/gateway/h1.py); its errors are TRANSPORT_ERRORS like aiohttp's."""

    def __init__(self, settings: Settings) -> None:
        self.pool = H1Pool(
            settings.upstream_url,
            limit=settings.upstream_max_connections,
            connect_timeout=settings.upstream_connect_timeout_seconds,
            read_timeout=settings.upstream_read_timeout_seconds,
            pool_timeout=settings.upstream_pool_timeout_seconds,
            keepalive=settings.upstream_keepalive_seconds,
            max_response_bytes=settings.upstream_max_response_bytes,
        )

    async def post(self, path: str, body: bytes, request_id: str) -> tuple[int, bytes]:
        try:
            r = await self.pool.send(b"POST", path, body, {"X-Request-ID": request_id}, stream=False)
        except TRANSPORT_ERRORS as exc:
            raise upstream_error(exc) from None
        content = await r.read()  # complete already: no wait
        r.release()
        return r.status, content

    async def open_stream(self, path: str, body: bytes, request_id: str) -> UpstreamResponse:
        try:
            return await self.pool.send(b"POST", path, body, {"X-Request-ID": request_id}, stream=True)
        except TRANSPORT_ERRORS as exc:
            raise upstream_error(exc) from None

    async def request(
        self, method: str, path: str, *, timeout_s: float, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        body = orjson.dumps(json_body) if json_body is not None else b""
        async with asyncio.timeout(timeout_s):
            r = await self.pool.send(method.encode(), path, body, headers, stream=False)
        content = await r.read()
        r.release()
        return r.status, content

    async def aclose(self) -> None:
        await self.pool.aclose()


class AiohttpUpstream:
    """The aiohttp client (`GATEWAY_UPSTREAM_CLIENT=aiohttp`): one session per worker."""

    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.upstream_url
        self.max_response_bytes = settings.upstream_max_response_bytes
        # connect: the pool wait and the TCP connect together; sock_connect: the TCP connect alone;
        # sock_read bounds the silence between bytes (the whole reply or the next chunk).
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.upstream_pool_timeout_seconds,
            sock_connect=settings.upstream_connect_timeout_seconds,
            sock_read=settings.upstream_read_timeout_seconds,
        )
        self._urls: dict[str, URL] = {}
        self.session = aiohttp.ClientSession(
            base_url=self.base_url,
            timeout=self.timeout,
            connector=_Connector(
                limit=settings.upstream_max_connections,
                # Shorter than the upstream's own keep-alive (uvicorn/vLLM: 5 s), so the gateway
                # does not reuse a connection the server is closing (a POST is never retried).
                keepalive_timeout=settings.upstream_keepalive_seconds,
            ),
            # No proxies/netrc from the environment on a loopback hop; no cookies between users.
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # The upstream is asked for identity encoding: nothing to decompress on the hot path.
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        self._json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._sse_headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self.base_url + path)
        return url

    async def post(self, path: str, body: bytes, request_id: str) -> tuple[int, bytes]:
        """Non-streaming POST; the whole body is read (capped). Transport errors → GatewayError.
        Cancelling the caller drops the connection, which aborts the request upstream."""
        r: aiohttp.ClientResponse | None = None
        try:
            r = await self.session.post(
                self._url(path), data=body, headers={**self._json_headers, "X-Request-ID": request_id}
            )
            if r.content_length is not None and r.content_length <= self.max_response_bytes:
                content = await r.read()  # the usual case: one call
            else:
                content = await read_capped(r, self.max_response_bytes)
        except TRANSPORT_ERRORS as exc:
            if r is not None:
                r.close()
            raise upstream_error(exc) from None
        except BaseException:
            if r is not None:
                r.close()
            raise
        r.release()
        return r.status, content

    async def open_stream(self, path: str, body: bytes, request_id: str) -> UpstreamResponse:
        """Streaming POST: returns once headers arrived; the caller must close()/release() it."""
        try:
            return await self.session.post(
                self._url(path), data=body, headers={**self._sse_headers, "X-Request-ID": request_id}
            )
        except TRANSPORT_ERRORS as exc:
            raise upstream_error(exc) from None

    async def request(
        self, method: str, path: str, *, timeout_s: float, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Small control-plane calls (health, model list, probe); raises the transport errors as-is."""
        async with self.session.request(
            method, path, json=json_body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as r:
            return r.status, await read_capped(r, self.max_response_bytes)

    async def aclose(self) -> None:
        await self.session.close()
