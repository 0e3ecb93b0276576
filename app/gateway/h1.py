"""The default upstream hop: keep-alive HTTP/1.1 on asyncio, framed by httptools (llhttp).

Why not aiohttp on the hot path: `make bench-gateway` runs the gateway with both clients in
the same run; aiohttp's per-request machinery (URL, header multidict, ClientRequest, payload
and writer objects, timers, traces) costs ~50 µs of the gateway's ~170 µs CPU per request on
2 cores and keeps the RPS ratio below the 0.70 target, this client does not. The parsing is
not hand-written: llhttp (the parser of Node.js and uvicorn) frames every reply. What this
module adds is the pool and the exchange, and `GATEWAY_UPSTREAM_CLIENT=aiohttp` switches back
to the library client; tests/gateway/test_upstream_conformance.py runs against both.

Rules, each one a case of that suite:
- interim 1xx replies are skipped; the exchange ends at the final reply;
- bytes after a complete reply (in the same read or later, or on an idle pooled connection)
  are never parsed as another reply: the connection is dropped instead;
- a request that was written is never re-sent (no duplicate generation); so idle connections
  are retired before the upstream's own keep-alive timeout closes them;
- waiting for a pooled connection is bounded (then 503), so are connect and read silence;
- replies are capped at `max_response_bytes` (then 502); closing a reply drops the connection,
  which aborts the request in vLLM;
- HTTP/1.0, `Connection: close` and bodies delimited by the connection's end are honoured.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # streamed bytes buffered before reading from the upstream pauses


class UpstreamConnectError(ConnectionError):
    """The connection could not be made (refused, unreachable, connect timeout) → 503."""


class UpstreamBusyError(ConnectionError):
    """Every pooled connection stayed busy for the whole pool wait → 503."""


class UpstreamReadTimeout(TimeoutError):
    """The upstream went silent for longer than the read timeout → 504."""


class UpstreamProtocolError(ConnectionError):
    """The reply broke the protocol (malformed, cut short, stream without [DONE]) → 502."""


class UpstreamTooLargeError(UpstreamProtocolError):
    """The reply is larger than the cap → 502."""


class _StrayBytes(Exception):
    """Raised from a parser callback to stop parsing at bytes that follow a complete reply."""


class _Conn(asyncio.Protocol):
    """One upstream connection; serves one exchange at a time."""

    def __init__(self, pool: H1Pool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.resp: Response | None = None
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None or resp.complete:
            # Bytes nobody asked for (on an idle connection, or after the reply): whatever they
            # are, they must never become another request's reply.
            self.close()
            return
        resp.last = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            resp._fail(UpstreamProtocolError("the upstream switched protocols"))
            self.close()
        except httptools.HttpParserError as exc:
            if not resp.complete:
                err = exc.__context__ if isinstance(exc.__context__, UpstreamProtocolError) else None
                resp._fail(err or UpstreamProtocolError(f"malformed HTTP reply: {exc}"))
            self.close()  # after a complete reply: stray bytes; the reply itself stands

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.pool._lost()
        resp = self.resp
        if resp is not None and not resp.complete:
            if resp.headers_done and not resp.framed:
                resp._finish()  # no Content-Length, not chunked: the body ends with the connection
            else:
                resp._fail(UpstreamProtocolError("the upstream closed the connection"))

    # httptools callbacks (one reply may be preceded by interim 1xx ones)
    def on_message_begin(self) -> None:
        resp = self.resp
        assert resp is not None
        if resp.complete:
            raise _StrayBytes()
        resp.framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        resp = self.resp
        assert resp is not None
        n = name.lower()
        if n == b"content-length":
            resp.framed = True
            try:
                resp.content_length = int(value)
            except ValueError:
                resp.content_length = None  # llhttp rejects it; the parse error follows
        elif n == b"transfer-encoding" and b"chunked" in value.lower():
            resp.framed = True

    def on_headers_complete(self) -> None:
        resp = self.resp
        assert resp is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            resp.interim = True  # 100 Continue, 103 Early Hints…: the final reply follows
            resp.content_length = None
            return
        resp.status = status
        resp.headers_done = True
        if resp.content_length is not None and resp.content_length > resp.cap:
            raise UpstreamTooLargeError(f"Content-Length {resp.content_length} > {resp.cap}")
        resp._wake()

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        assert resp is not None
        resp.size += len(body)
        if resp.size > resp.cap:
            raise UpstreamTooLargeError(f"reply larger than {resp.cap} bytes")
        resp.chunks.append(body)
        if resp.streaming:
            resp.buffered += len(body)
            if resp.buffered > HIGH_WATER and self.transport is not None:
                self.transport.pause_reading()
                resp.paused = True
            resp._wake()

    def on_message_complete(self) -> None:
        resp = self.resp
        assert resp is not None
        if resp.interim:
            resp.interim = False
            return
        resp.keep_alive = self.parser.should_keep_alive()
        resp._finish()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.closed:
            self.closed = True
            self.pool._lost()


class Response:
    """One exchange. Unary: `read()`. Streamed: `iter_any()`/`readany()`, then `release()`
    (complete: the connection goes back to the pool) or `close()` (drop the connection)."""

    def __init__(self, conn: _Conn, streaming: bool, read_timeout: float, cap: int) -> None:
        self.conn = conn
        self.streaming = streaming
        self.cap = cap
        self.status = 0
        self.content_length: int | None = None
        self.headers_done = False
        self.interim = False
        self.framed = False
        self.complete = False
        self.keep_alive = False
        self.size = 0
        self.paused = False
        self.buffered = 0
        self.chunks: collections.deque[bytes] = collections.deque()
        self.error: BaseException | None = None
        self._done = False
        self._loop = loop = conn.loop
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout = read_timeout
        self.last = loop.time()
        self._timer: asyncio.TimerHandle | None = loop.call_later(read_timeout, self._check_timeout)

    @property
    def content(self) -> Response:
        return self  # aiohttp's shape: `r.content.iter_any()` / `r.content.readany()`

    def _check_timeout(self) -> None:
        # One timer per exchange, re-armed only when it fires (cheaper than resetting it per read).
        if self.complete or self.error is not None:
            self._timer = None
            return
        due = self.last + self._read_timeout
        if due > self._loop.time() + 0.001:
            self._timer = self._loop.call_at(due, self._check_timeout)
            return
        self._timer = None
        self._fail(UpstreamReadTimeout("the upstream did not answer in time"))
        self.conn.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _finish(self) -> None:
        self.complete = True
        self._stop_timer()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.complete or self.error is not None:
            return
        self.error = exc
        self._stop_timer()
        self._wake()

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def wait_headers(self) -> None:
        while not self.headers_done and self.error is None:
            await self._wait()
        if self.error is not None:
            raise self.error

    async def read(self) -> bytes:
        """The whole body (unary, or the rest of a stream)."""
        while not self.complete and self.error is None:
            self._resume()
            await self._wait()
        if self.error is not None:
            raise self.error
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return body

    def _resume(self) -> None:
        if self.paused:
            self.paused = False
            self.buffered = 0
            if self.conn.transport is not None:
                self.conn.transport.resume_reading()

    async def readany(self) -> bytes:
        """The bytes that arrived since the last call (waiting for some); b"" at the end."""
        chunks = self.chunks
        while True:
            if chunks:
                data = b"".join(chunks) if len(chunks) > 1 else chunks[0]
                chunks.clear()
                self.buffered = 0
                self._resume()
                return data
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; raises if the reply is cut short."""
        while data := await self.readany():
            yield data

    def release(self) -> None:
        """Done with the exchange: a complete keep-alive reply returns the connection to the pool."""
        if self._done:
            return
        self._done = True
        self._stop_timer()
        conn = self.conn
        if self.complete and self.keep_alive and self.error is None and not conn.closed:
            conn.resp = None
            self._resume()  # a pooled connection must read again
            conn.pool._put(conn)
        else:
            conn.resp = None
            conn.close()

    def close(self) -> None:
        """Drop the connection (aborts the request upstream)."""
        if self._done:
            return
        self._done = True
        self._stop_timer()
        self.conn.resp = None
        self.conn.close()
        self._fail(UpstreamProtocolError("closed"))


class H1Pool:
    """Keep-alive connections to one origin, at most `limit` open at once."""

    def __init__(
        self,
        base_url: str,
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        pool_timeout: float,
        keepalive: float,
        max_response_bytes: int,
    ) -> None:
        u = urlsplit(base_url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if u.scheme == "https" else None
        self.prefix = u.path.rstrip("/").encode()
        default_port = self.port == (443 if u.scheme == "https" else 80)
        host = self.host if ":" not in self.host else f"[{self.host}]"  # IPv6 literal
        self.host_header = (host if default_port else f"{host}:{self.port}").encode()
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool_timeout = pool_timeout
        self.keepalive = keepalive
        self.max_response_bytes = max_response_bytes
        self._idle: list[_Conn] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._heads: dict[tuple[bytes, str, bytes], bytes] = {}
        self._closing = False

    # ------------------------------------------------------------------ pool
    def _lost(self) -> None:
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _put(self, conn: _Conn) -> None:
        if self._closing:
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)
        self._wake()

    async def _acquire(self) -> _Conn:
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            while self._idle:
                conn = self._idle.pop()  # the most recently used: the warmest, least likely stale
                if conn.closed:
                    continue
                if loop.time() - conn.idle_since > self.keepalive:
                    conn.close()  # the upstream may be closing it right now: never write into that
                    continue
                return conn
            if self._open < self.limit:
                self._open += 1
                try:
                    return await self._connect(loop)
                except BaseException:
                    self._lost()
                    raise
            if deadline is None:
                deadline = loop.time() + self.pool_timeout
            w = loop.create_future()
            self._waiters.append(w)
            try:
                async with asyncio.timeout_at(deadline):
                    await w
            except TimeoutError:
                raise UpstreamBusyError(f"no free upstream connection within {self.pool_timeout:g}s") from None
            except BaseException:
                if w.done() and not w.cancelled():
                    self._wake()  # pass the wake-up on
                raise

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Conn:
        conn = _Conn(self)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: conn, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
                )
        except TimeoutError:
            raise UpstreamConnectError(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise UpstreamConnectError(f"connect to {self.host}:{self.port} failed: {exc}") from None
        return conn

    # ------------------------------------------------------------------ exchanges
    def _head(self, method: bytes, path: str, accept: bytes, headers: dict[str, str] | None, length: int) -> bytes:
        key = (method, path, accept)
        prefix = self._heads.get(key)
        if prefix is None:
            prefix = b"%s %s%s HTTP/1.1\r\nHost: %s\r\nAccept: %s\r\n" % (
                method,
                self.prefix,
                path.encode(),
                self.host_header,
                accept,
            )
            if len(self._heads) < 64:
                self._heads[key] = prefix
        extra = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items()) if headers else b""
        if length or method == b"POST":
            extra += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % length
        return prefix + extra + b"\r\n"

    async def send(
        self, method: bytes, path: str, body: bytes, headers: dict[str, str] | None, *, stream: bool
    ) -> Response:
        """Write one request; returns once the final reply's headers arrived (stream) or the
        whole reply did (unary). Never re-sends: a failure after writing is the caller's error."""
        accept = b"text/event-stream" if stream else b"application/json"
        # Header values are validated ids or constants: no CR/LF can reach this point.
        data = self._head(method, path, accept, headers, len(body)) + body
        conn = await self._acquire()
        resp = Response(conn, stream, self.read_timeout, self.max_response_bytes)
        conn.resp = resp
        assert conn.transport is not None
        conn.transport.write(data)
        try:
            if stream:
                await resp.wait_headers()
            else:
                while not resp.complete and resp.error is None:
                    await resp._wait()
                if resp.error is not None:
                    raise resp.error
            return resp
        except BaseException:
            resp.close()  # also on cancel (a client disconnect): dropping it aborts the request upstream
            raise

    async def aclose(self) -> None:
        self._closing = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
