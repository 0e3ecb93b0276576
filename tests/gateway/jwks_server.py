"""A JWKS endpoint on loopback for the tests: counts fetches and can fail like an IdP does.

Modes: "ok" (serves `body`), "error" (HTTP 500), "empty" (a JWKS with no keys), "hang"
(accepts and never answers until close()).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JwksServer:
    def __init__(self, body: bytes = b'{"keys": []}', mode: str = "ok") -> None:
        self.body = body
        self.mode = mode
        self.fetch_times: list[float] = []  # time.monotonic() of every GET
        self._release = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer._lock:
                    outer.fetch_times.append(time.monotonic())
                    mode, body = outer.mode, outer.body
                if mode == "hang":
                    outer._release.wait(60)
                    return
                status = 500 if mode == "error" else 200
                if mode == "empty":
                    body = b'{"keys": []}'
                elif mode == "error":
                    body = b"internal error"
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, name="jwks-server", daemon=True)

    @property
    def fetches(self) -> int:
        with self._lock:
            return len(self.fetch_times)

    def set(self, *, mode: str | None = None, body: bytes | None = None) -> None:
        with self._lock:
            if mode is not None:
                self.mode = mode
            if body is not None:
                self.body = body

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
