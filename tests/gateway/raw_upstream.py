"""A misbehaving HTTP/1.1 upstream written on raw sockets: each model name picks a protocol edge case.

Runs in a thread of the test process on 127.0.0.1 (free port). Replies echo the request's
last message content, so a test can tell whose reply a client received. Models:
  ok               well-formed JSON reply (Content-Length), keep-alive
  continue         `100 Continue` and `103 Early Hints` before the final 200
  smuggle          `Content-Length: 0` reply followed, in the same write, by a second response "SMUGGLED"
  late-smuggle     a correct reply, then an unsolicited response 50 ms later on the idle connection
  close-after-read reads the whole request, then closes without a reply
  http10           HTTP/1.0 reply without Content-Length (body ends with the connection)
  conn-close       HTTP/1.1 reply with `Connection: close`
  chunked-odd      chunked body with extensions, upper-case hex, a trailer, written a few bytes at a time
  sse-crlf         SSE stream with CRLF line ends, `data:` without a space, split across writes
  huge             a 200 kB JSON reply; huge-stream: an endless SSE stream
  slow             SSE stream of one event per 0.2 s for 3 s
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from typing import Any

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _chat_reply(text: str) -> bytes:
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def _chunk(text: str) -> bytes:
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}}],
        }
    ).encode()


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


class RawUpstream:
    def __init__(self, models: list[str]) -> None:
        self.models = models
        self.received: Counter[str] = Counter()  # generation requests per model (not the probe)
        self.connections = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> RawUpstream:
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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for _ in range(1000):  # keep-alive: bounded number of exchanges per connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep = await self._reply(method, path, headers, body, writer)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _reply(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, w: asyncio.StreamWriter
    ) -> bool:
        if path == "/health":
            w.write(_ok(b""))
            return True
        if path == "/v1/models":
            data = [{"id": m, "object": "model", "max_model_len": 100000} for m in self.models]
            w.write(_ok(json.dumps({"object": "list", "data": data}).encode()))
            return True
        body: dict[str, Any] = json.loads(raw)
        if path == "/v1/completions":  # the readiness probe
            w.write(_ok(json.dumps({"choices": [{"index": 0, "text": "pong"}]}).encode()))
            return True
        model = body["model"]
        self.received[model] += 1
        text = str(body["messages"][-1]["content"])
        if model == "ok":
            w.write(_ok(_chat_reply(text)))
        elif model == "continue":
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await w.drain()
            await asyncio.sleep(0.05)
            w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
            await asyncio.sleep(0.05)
            w.write(_ok(_chat_reply(text)))
        elif model == "smuggle":
            w.write(_ok(b"") + _ok(_chat_reply("SMUGGLED")))
        elif model == "late-smuggle":
            w.write(_ok(_chat_reply(text)))
            await w.drain()
            await asyncio.sleep(0.05)
            w.write(_ok(_chat_reply("SMUGGLED")))
        elif model == "close-after-read":
            return False
        elif model == "http10":
            w.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + _chat_reply(text))
            return False
        elif model == "conn-close":
            w.write(_ok(_chat_reply(text), b"Connection: close\r\n"))
            return False
        elif model == "chunked-odd":
            payload = _chat_reply(text)
            half = len(payload) // 2
            wire = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%X;ext=1\r\n%s\r\n" % (half, payload[:half])
                + b"%x\r\n%s\r\n" % (len(payload) - half, payload[half:])
                + b"0\r\nX-Trailer: t\r\n\r\n"
            )
            for i in range(0, len(wire), 7):
                w.write(wire[i : i + 7])
                await w.drain()
        elif model == "sse-crlf":
            events = [b"data:" + _chunk(text) + b"\r\n\r\n", b": comment\r\n\r\n", b"data: [DONE]\r\n\r\n"]
            wire = b"".join(events)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            # Split so that a CR and its LF arrive in different reads.
            cut = wire.index(b"\r\n\r\n") + 1
            for piece in (wire[:cut], wire[cut:]):
                w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await w.drain()
                await asyncio.sleep(0.05)
            w.write(b"0\r\n\r\n")
        elif model == "huge":
            w.write(_ok(_chat_reply("x" * 200_000)))
        elif model in ("huge-stream", "slow"):
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            n, delay, size = (15, 0.2, 10) if model == "slow" else (10_000, 0.0, 1000)
            for _ in range(n):
                ev = b"data: " + _chunk("y" * size) + b"\n\n"
                w.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                await w.drain()
                await asyncio.sleep(delay)
            ev = b"data: [DONE]\n\n"
            w.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(ev), ev))
        return True
