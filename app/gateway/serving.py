"""How the gateway is served: two uvicorn servers per worker, both guarded against slow or huge clients.

- The API port (`--port`) serves only the API (app.gateway.app). The internal port
  (`--internal-port`) serves `/metrics`, `/readyz` and `/healthz` for the kubelet and Prometheus;
  it is a second uvicorn server in the same worker and event loop, so a blocked loop fails the
  probes, while its own connection budget keeps probes and scrapes answering when the API port
  is saturated (a liveness probe must not kill a pod for being busy).
- `GuardedHttpToolsProtocol` is uvicorn's httptools protocol plus what uvicorn has no setting for
  with httptools: a cap on the request head (431), a deadline for the head (also a new
  connection's first request) and for the whole body (408), and a hard cap on open
  connections. uvicorn's own settings do the rest: `limit_concurrency` (503 once the connection
  budget is used up), `timeout_keep_alive` (idle keep-alive connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.gateway import metrics as m
from app.gateway.app import Gateway, GatewayApp, create_app
from app.gateway.config import Settings, load_settings

log = logging.getLogger(__name__)

# `python -m app.gateway` tells each worker where the internal server listens ("host,port,shared|own").
INTERNAL_LISTEN_ENV = "GATEWAY_INTERNAL_LISTEN"
# Connections the internal port accepts: the kubelet and a Prometheus or two.
INTERNAL_MAX_CONNECTIONS = 32


@dataclass(frozen=True)
class ClientLimits:
    """What a client may cost a worker (picklable: uvicorn's workers receive it with the config)."""

    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    max_connections: int

    @classmethod
    def of(cls, s: Settings, max_connections: int | None = None) -> ClientLimits:
        return cls(
            s.max_header_bytes,
            s.header_read_timeout_seconds,
            s.body_read_timeout_seconds,
            max_connections or s.max_connections,
        )


class _HeadTooLarge(Exception):
    pass


_NONE, _HEAD, _BODY = 0, 1, 2  # what the connection waits for from the client


def _reply(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


REPLY_431 = _reply(
    b"431 Request Header Fields Too Large",
    b'{"error":{"message":"The request line and headers are too large.","type":"invalid_request_error",'
    b'"param":null,"code":"headers_too_large"}}',
)
REPLY_408 = _reply(
    b"408 Request Timeout",
    b'{"error":{"message":"The request did not arrive in time.","type":"invalid_request_error",'
    b'"param":null,"code":"request_timeout"}}',
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head size cap, head/body deadlines and a connection cap.

    One timer per connection, re-armed only when it fires (phase changes just note the time), so
    a busy keep-alive connection costs no timer operations per request.
    """

    def __init__(self, *args: Any, limits: ClientLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._phase = _NONE
        self._since = 0.0
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    # -- phases and the deadline timer
    def _enter(self, phase: int) -> None:
        self._phase = phase
        if phase:
            self._since = self.loop.time()
            if self._timer is None:
                self._timer = self.loop.call_at(self._since + self._timeout(phase), self._check)

    def _timeout(self, phase: int) -> float:
        return self.limits.header_timeout if phase == _HEAD else self.limits.body_timeout

    def _check(self) -> None:
        self._timer = None
        phase = self._phase
        if not phase or self.transport.is_closing():
            return
        if phase == _HEAD and self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head while the previous response is still going out: its clock starts
            # when that response ends (a 408 must never land inside another response).
            self._since = self.loop.time()
        due = self._since + self._timeout(phase)
        if due > self.loop.time() + 0.001:
            self._timer = self.loop.call_at(due, self._check)
            return
        self._expire(phase)

    def _expire(self, phase: int) -> None:
        self._phase = _NONE
        cycle = self.cycle if phase == _BODY else None
        if cycle is not None:
            # The app may be waiting in receive(): it gets http.disconnect (its request ends, the
            # in-flight gauge drops) and anything it sends afterwards is dropped.
            started = cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
            if not started:
                self.transport.write(REPLY_408)
        elif phase == _HEAD and self._head_bytes:
            self.transport.write(REPLY_408)
        # A connection that never sent a byte is closed silently (as after a keep-alive timeout).
        self.transport.close()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Over the hard cap: closed before a byte is read. (At the cap itself uvicorn's
            # limit_concurrency answers the request with 503.)
            self._phase = _NONE
            transport.close()
            return
        self._enter(_HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _NONE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, plus the head cap (431) instead of its 400 for that case.
        if self.transport.is_closing():
            return
        if self._phase == _HEAD:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__cause__ or exc.__context__, _HeadTooLarge):
                self._reject_head()
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._phase == _HEAD and self._head_bytes > self.limits.max_header_bytes:
            self._reject_head()  # an unterminated head: never buffer more than the cap (+ one read)

    def _reject_head(self) -> None:
        self._phase = _NONE
        self.transport.write(REPLY_431)
        self.transport.close()

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != _HEAD:
            self._head_bytes = 0
            self._enter(_HEAD)

    def on_headers_complete(self) -> None:
        # The exact size of what was parsed; raising stops the parser before the app sees it.
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_header_bytes:
            raise _HeadTooLarge()
        self._enter(_BODY)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = _NONE
        self._head_bytes = 0
        super().on_message_complete()


def protocol(limits: ClientLimits) -> Any:
    """The `http=` value for uvicorn.Config (a picklable partial: workers unpickle their config)."""
    return functools.partial(GuardedHttpToolsProtocol, limits=limits)


# -------------------------------------------------------------------- the internal port
def internal_app(gw: Gateway) -> Starlette:
    """/metrics, /readyz, /healthz of one worker (metrics aggregate all workers in multiprocess mode)."""

    async def healthz(_: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(_: Request) -> Response:
        if gw.readiness is None:
            return Response(b'{"ready":false,"reason":"starting"}', status_code=503, media_type="application/json")
        ready, info = gw.readiness.status()
        return Response(orjson.dumps(info), status_code=200 if ready else 503, media_type="application/json")

    async def metrics(_: Request) -> Response:
        body, ctype = m.render()
        return Response(body, media_type=ctype)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


class _InternalServer(uvicorn.Server):
    """Runs beside the API server in its event loop; the API server owns the signals."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def listen_socket(host: str, port: int, *, shared: bool) -> socket.socket:
    """A listening socket; `shared` (several workers): SO_REUSEPORT, the kernel spreads connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"gateway: cannot listen on {host}:{port} (internal port): {exc}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def format_listen(host: str, port: int, *, shared: bool) -> str:
    return f"{host},{port},{'shared' if shared else 'own'}"


def parse_listen(value: str) -> tuple[str, int, bool]:
    host, port, shared = value.split(",")
    return host, int(port), shared == "shared"


def create_served_app() -> GatewayApp:
    """uvicorn's factory in `python -m app.gateway`: the API app, whose lifespan also runs the
    internal server of this worker (where INTERNAL_LISTEN_ENV says)."""
    settings = load_settings()
    app = create_app(settings)
    listen = os.environ.get(INTERNAL_LISTEN_ENV)
    if not listen:
        return app
    host, port, shared = parse_listen(listen)
    inner = app.router.lifespan_context
    limits = ClientLimits.of(settings, INTERNAL_MAX_CONNECTIONS)

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            sock = listen_socket(host, port, shared=shared)
            config = uvicorn.Config(
                internal_app(app.state.gateway),
                lifespan="off",
                http=protocol(limits),
                loop="none",
                access_log=False,
                proxy_headers=False,
                limit_concurrency=limits.max_connections,
                log_config=None,  # the worker's logging is configured already
            )
            server = _InternalServer(config)
            task = asyncio.create_task(server.serve(sockets=[sock]), name="internal-server")
            try:
                yield state
            finally:
                # After the API server drained: probes and scrapes answered until then.
                server.should_exit = True
                await task

    app.router.lifespan_context = lifespan
    return app
