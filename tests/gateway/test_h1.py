"""The lean upstream HTTP/1.1 client: framing, keep-alive reuse, stale connections, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from app.gateway.h1 import H1Pool, UpstreamConnectError, UpstreamProtocolError, UpstreamTimeoutError
from pipeline.runtime.procs import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(length)


async def _serve(handler: Handler) -> tuple[asyncio.Server, H1Pool]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, H1Pool(f"http://127.0.0.1:{port}", limit=4, connect_timeout=1.0, read_timeout=0.5)


def test_keepalive_reuse_and_stale_connection_retry() -> None:
    async def main() -> None:
        connections = 0
        heads: list[bytes] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            for _ in range(2):  # two exchanges per connection, then a silent close (no Connection: close)
                head, body = await _read_request(reader)
                heads.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
            writer.close()

        server, pool = await _serve(handler)
        async with server:
            for i in range(5):
                r = await pool.post("/v1/x", b'{"i":%d}' % i, f"rid-{i}", stream=False)
                r.release()
                assert (r.status, r.content) == (200, b'{"i":%d}' % i)
                await asyncio.sleep(0.02)  # let the server's close arrive (or not) before the next call
            await pool.aclose()
        assert connections == 3  # reused twice per connection; closed ones replaced, no error surfaced
        assert b"X-Request-ID: rid-4\r\n" in heads[-1] and heads[-1].startswith(b"POST /v1/x HTTP/1.1\r\n")

    asyncio.run(main())


def test_chunked_stream_and_body_until_close() -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                head, _ = await _read_request(reader)
                if b"text/event-stream" not in head:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for part in (b"data: 1\n\n", b"data: [DONE]\n\n"):
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                    await asyncio.sleep(0.01)
                writer.write(b"0\r\n\r\n")
            # HTTP/1.0 style: no length, the body ends with the connection.
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close")
            writer.close()

        server, pool = await _serve(handler)
        async with server:
            r = await pool.post("/s", b"{}", "a", stream=True)
            assert r.status == 200
            got = b"".join([c async for c in r.iter_any()])
            r.release()
            assert got == b"data: 1\n\ndata: [DONE]\n\n"
            u = await pool.post("/u", b"{}", "b", stream=False)
            u.release()
            assert u.content == b"until-close"
            await pool.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("mode", ["hang", "garbage", "cut"])
def test_failures_raise_the_mapped_errors(mode: str) -> None:
    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            if mode == "hang":
                await asyncio.sleep(5)
            elif mode == "garbage":
                writer.write(b"<html>not http at all\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
                await writer.drain()
                writer.close()

        server, pool = await _serve(handler)
        expected = {"hang": UpstreamTimeoutError, "garbage": UpstreamProtocolError, "cut": UpstreamProtocolError}
        async with server:
            with pytest.raises(expected[mode]):
                await pool.post("/x", b"{}", "r", stream=False)
            await pool.aclose()
            server.close()

    asyncio.run(main())


def test_refused_is_a_connect_error() -> None:
    async def main() -> None:
        pool = H1Pool(f"http://127.0.0.1:{free_port()}", limit=1, connect_timeout=1.0, read_timeout=1.0)
        with pytest.raises(UpstreamConnectError):
            await pool.post("/x", b"{}", "r", stream=False)
        assert pool._open == 0  # the failed attempt does not hold a pool slot

    asyncio.run(main())
