"""The pooled HTTP client to vLLM and the mapping of its failures to 502/503/504."""

from __future__ import annotations

import logging

import httpx

from app.gateway.config import Settings
from app.gateway.errors import GatewayError
from app.gateway.metrics import UPSTREAM_ERRORS

log = logging.getLogger(__name__)

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
SSE_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


def upstream_error(exc: BaseException) -> GatewayError:
    """Translate a transport failure into the status a client should see."""
    if isinstance(exc, httpx.TimeoutException):
        kind, err = "timeout", GatewayError(504, "The model server did not answer in time.", code="upstream_timeout")
    elif isinstance(exc, httpx.ConnectError):
        kind, err = (
            "unavailable",
            GatewayError(503, "The model server is unavailable.", code="upstream_unavailable"),
        )
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
    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.upstream_url
        connect = settings.upstream_connect_timeout_seconds
        self.timeout = httpx.Timeout(
            connect=connect, read=settings.upstream_read_timeout_seconds, write=connect, pool=connect
        )
        n = settings.upstream_max_connections
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout,
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=30.0),
            # The gateway must not pick up proxies or netrc from the environment for a loopback hop.
            trust_env=False,
        )

    async def post(self, path: str, body: bytes, request_id: str) -> httpx.Response:
        """Non-streaming POST; the whole body is read. Transport errors → GatewayError."""
        try:
            return await self.client.post(path, content=body, headers={**JSON_HEADERS, "x-request-id": request_id})
        except httpx.HTTPError as exc:
            raise upstream_error(exc) from None

    async def open_stream(self, path: str, body: bytes, request_id: str) -> httpx.Response:
        """Streaming POST: returns once headers arrived; the caller must aclose() it."""
        req = self.client.build_request("POST", path, content=body, headers={**SSE_HEADERS, "x-request-id": request_id})
        try:
            return await self.client.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise upstream_error(exc) from None

    async def aclose(self) -> None:
        await self.client.aclose()
