"""pipeline/runtime/haproxy.py against a real HAProxy: two loopback HTTP servers, weights changed at runtime."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from pipeline.runtime import tools
from pipeline.runtime.haproxy import HAProxyError, haproxy, render_config

pytestmark = pytest.mark.skipif(tools.find("haproxy") is None, reason="haproxy not installed (apt-get install haproxy)")


@contextlib.contextmanager
def named_server(name: str) -> Iterator[int]:
    """A loopback HTTP server answering its own name; stopped on exit."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def _split(url: str, n: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    with httpx.Client(timeout=5) as c:
        for _ in range(n):
            r = c.get(url + "/")
            assert r.status_code == 200
            seen[r.text] = seen.get(r.text, 0) + 1
    return seen


def test_weights_split_traffic_and_stats_count_it(tmp_path: Path) -> None:
    with named_server("stable") as p1, named_server("canary") as p2, haproxy(tmp_path, ["s0", "c0"]) as lb:
        lb.api.point(lb.backend, "s0", p1, 75)
        lb.api.point(lb.backend, "c0", p2, 25)
        # Smooth weighted round robin: exactly 3:1 over whole cycles of 4 requests.
        assert _split(lb.url, 200) == {"stable": 150, "canary": 50}
        stats = lb.api.stats(lb.backend)
        assert (stats["s0"].total, stats["c0"].total) == (150, 50)
        assert stats["c0"].weight == 25 and stats["c0"].status == "no check"  # ready, no health checks
        # Weight 0: the canary gets nothing more, at once.
        lb.api.set_weight(lb.backend, "c0", 0)
        assert _split(lb.url, 40) == {"stable": 40}
        assert lb.api.stats(lb.backend)["c0"].total == 50


def test_disabled_slots_take_no_traffic_and_bad_commands_raise(tmp_path: Path) -> None:
    with named_server("stable") as p1, haproxy(tmp_path, ["s0", "s1"]) as lb:
        lb.api.point(lb.backend, "s0", p1, 10)
        assert _split(lb.url, 10) == {"stable": 10}
        assert lb.api.stats(lb.backend)["s1"].status == "MAINT"
        with pytest.raises(HAProxyError, match="nope"):
            lb.api.set_weight(lb.backend, "nope", 1)
        with pytest.raises(ValueError, match=r"outside 0\.\.256"):
            lb.api.set_weight(lb.backend, "s0", 300)


def test_config_refuses_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without spaces"):
        render_config(1234, tmp_path / "s", "llm", ["a b"])
    with pytest.raises(ValueError, match="at least one server"):
        render_config(1234, tmp_path / "s", "llm", [])


@pytest.mark.parametrize("extra", [0, 1, 5, 40])
def test_a_long_work_dir_still_starts(tmp_path: Path, extra: int) -> None:
    """HAProxy refuses an admin socket path over 97 bytes: around that length the balancer still starts."""
    work = tmp_path / ("w" * max(1, 97 - len(str(tmp_path / "admin.sock")) - 1 + extra))
    with named_server("stable") as port, haproxy(work, ["s0"]) as lb:
        lb.api.point(lb.backend, "s0", port, 1)
        assert _split(lb.url, 4) == {"stable": 4}
