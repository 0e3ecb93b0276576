"""The pooled HTTP clients to vLLM and the mapping of their failures to 502/503/504.

Generation requests (the hot path) go through `h1.H1Pool`, a minimal keep-alive HTTP/1.1
client on httptools; control-plane calls (health, model list, readiness probe) through
aiohttp. Not httpx: under 16 concurrent requests httpx's pool (httpcore) managed ~250 RPS
on 2 cores where aiohttp managed ~1,500, and the lean client costs less CPU again than
aiohttp; this hop is most of the gateway's overhead budget (docs/gateway.md has numbers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from app.gateway.config import Settings
from app.gateway.errors import GatewayError
from app.gateway.h1 import H1Pool, Response, UpstreamConnectError
from app.gateway.metrics import UPSTREAM_ERRORS

log = logging.getLogger(__name__)

# Transport failures of this hop; everything else is a bug and stays a 500.
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def upstream_error(exc: BaseException) -> GatewayError:
    """Translate a transport failure into the status a client should see."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        kind, err = "timeout", GatewayError(504, "The model server did not answer in time.", code="upstream_timeout")
    elif isinstance(exc, UpstreamConnectError | aiohttp.ClientConnectorError | ConnectionRefusedError):
        kind, err = "unavailable", GatewayError(503, "The model server is unavailable.", code="upstream_unavailable")
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


class Upstream:
    """One keep-alive pool per worker; create inside the running event loop (lifespan)."""

    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.upstream_url
        connect = settings.upstream_connect_timeout_seconds
        # sock_read bounds the wait for the whole reply (unary) or the next chunk (stream).
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=connect, sock_connect=connect, sock_read=settings.upstream_read_timeout_seconds
        )
        self.session = aiohttp.ClientSession(
            base_url=self.base_url,
            timeout=self.timeout,
            connector=aiohttp.TCPConnector(limit=settings.upstream_max_connections, keepalive_timeout=30.0),
            # No proxies/netrc from the environment on a loopback hop; no cookies between users.
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
        )
        self.h1 = H1Pool(
            self.base_url,
            limit=settings.upstream_max_connections,
            connect_timeout=connect,
            read_timeout=settings.upstream_read_timeout_seconds,
        )

    async def post(self, path: str, body: bytes, request_id: str) -> tuple[int, bytes]:
        """Non-streaming POST; the whole body is read. Transport errors → GatewayError."""
        try:
            r = await self.h1.post(path, body, request_id, stream=False)
        except TRANSPORT_ERRORS as exc:
            raise upstream_error(exc) from None
        r.release()
        return r.status, r.content

    async def open_stream(self, path: str, body: bytes, request_id: str) -> Response:
        """Streaming POST: returns once headers arrived; the caller must close()/release() it."""
        try:
            return await self.h1.post(path, body, request_id, stream=True)
        except TRANSPORT_ERRORS as exc:
            raise upstream_error(exc) from None

    async def request(
        self, method: str, path: str, *, timeout_s: float, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Small control-plane calls (health, model list, probe); raises the transport errors as-is."""
        async with self.session.request(
            method, path, json=json_body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as r:
            return r.status, await r.read()

    async def aclose(self) -> None:
        await self.h1.aclose()
        await self.session.close()
