"""Issue 21, transport edges, against real gateway processes on 127.0.0.1 and raw sockets:
metrics and readiness only on the internal port, no redirect for a trailing slash, and the
client-side bounds (head size 431, head and body deadlines 408, connection cap)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from .conftest import Gateway, Keys, Upstream, chat_body, gateway_env, start_gateway

HEAD_TIMEOUT, BODY_TIMEOUT, MAX_HEADER = 1.0, 1.5, 16 * 1024


@pytest.fixture(scope="module")
def tight(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, rbac_file: Path, upstream: Upstream
) -> Iterator[Gateway]:
    """A gateway with short deadlines and a small head cap."""
    d = tmp_path_factory.mktemp("gw-transport")
    env = gateway_env(
        keys,
        rbac_file,
        upstream.url,
        d / "audit.log",
        GATEWAY_HEADER_READ_TIMEOUT_SECONDS=str(HEAD_TIMEOUT),
        GATEWAY_BODY_READ_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        GATEWAY_MAX_HEADER_BYTES=str(MAX_HEADER),
    )
    proc, url = start_gateway("gw-transport", env, d, keys)
    try:
        yield Gateway(url, proc, d / "audit.log", keys, env)
    finally:
        proc.stop()


def _addr(url: str) -> tuple[str, int]:
    u = httpx.URL(url)
    assert u.port is not None
    return u.host, u.port


@contextlib.contextmanager
def _conn(url: str, timeout: float = 5.0) -> Iterator[socket.socket]:
    s = socket.create_connection(_addr(url), timeout=timeout)
    try:
        yield s
    finally:
        s.close()


def _read_until_closed(s: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (at most `limit` seconds); and when it closed."""
    t0, data = time.monotonic(), b""
    s.settimeout(0.2)
    while time.monotonic() - t0 < limit:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError(f"the server kept the connection open for {limit}s (got {data[:80]!r})")
    return data, time.monotonic() - t0


def _gauge(g: Gateway, name: str) -> float:
    for line in g.metrics().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ------------------------------------------------------------------ item 1: ports
def test_metrics_and_readiness_are_served_on_the_internal_port_only(gateway: Gateway) -> None:
    for path in ("/metrics", "/readyz"):
        r = httpx.get(f"{gateway.url}{path}", timeout=5)
        assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert "gateway_requests_total" in gateway.metrics() or "gateway_in_flight_requests" in gateway.metrics()
    deadline = time.monotonic() + 10
    while (r := httpx.get(f"{gateway.internal_url}/readyz", timeout=5)).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    assert r.json()["ready"] is True
    # The internal port serves no API, the API port still its own routes.
    assert httpx.get(f"{gateway.internal_url}/v1/models", headers=gateway.auth(), timeout=5).status_code == 404
    assert httpx.get(f"{gateway.url}/v1/models", headers=gateway.auth(), timeout=5).status_code == 200
    assert "/metrics" not in httpx.get(f"{gateway.url}/openapi.json", timeout=5).json()["paths"]


# ------------------------------------------------------------------ item 9: trailing slash
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/chat/completions/"),
        ("POST", "/v1/completions/"),
        ("GET", "/v1/models/"),
        ("POST", "/v1/chat/completions//"),
        ("GET", "/healthz/"),
    ],
)
def test_a_trailing_slash_is_never_redirected(gateway: Gateway, method: str, path: str) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10, follow_redirects=False) as c:
        r = c.request(method, path, json=chat_body() if method == "POST" else None, headers=gateway.auth())
    assert not r.is_redirect and "location" not in r.headers, (r.status_code, r.headers)
    assert r.status_code == 404, r.text


# ------------------------------------------------------------------ item 5: head size
def test_a_head_over_the_cap_gets_431_and_one_under_it_is_served(tight: Gateway) -> None:
    big = b"x" * (MAX_HEADER + 1024)
    with _conn(tight.url) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: " + big + b"\r\n\r\n")
        data, _ = _read_until_closed(s, 5)
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    r = httpx.get(f"{tight.url}/healthz", headers={"x-fits": "y" * (MAX_HEADER // 2)}, timeout=5)
    assert r.status_code == 200


def test_unterminated_16mb_heads_do_not_grow_memory(tight: Gateway) -> None:
    """8 connections each sending up to 16 MB of a head that never ends: each gets 431 once the
    cap is passed and is closed; the worker's RSS stays flat (the issue measured 101 → 256 MB)."""
    pid = tight.proc.pid
    before = _rss_kib(pid)
    chunk = b"x" * 65536
    conns = [socket.create_connection(_addr(tight.url), timeout=5) for _ in range(8)]
    replies = []
    try:
        for s in conns:
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: ")
        for s in conns:
            sent = 0
            with contextlib.suppress(OSError):
                while sent < 16 * 1024 * 1024:  # bounded: 256 sends at most
                    s.sendall(chunk)
                    sent += len(chunk)
        after = _rss_kib(pid)
        for s in conns:
            with contextlib.suppress(OSError):
                replies.append(_read_until_closed(s, 5)[0])
    finally:
        for s in conns:
            s.close()
    print(f"gateway RSS before {before // 1024} MiB, after 8 x 16 MB unterminated heads {after // 1024} MiB")
    assert after - before < 24 * 1024, (before, after)
    assert any(r.startswith(b"HTTP/1.1 431 ") for r in replies), [r[:40] for r in replies]


# ------------------------------------------------------------------ item 5: deadlines
def test_a_connection_that_never_finishes_its_head_is_closed(tight: Gateway) -> None:
    with _conn(tight.url) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n")
        data, took = _read_until_closed(s, HEAD_TIMEOUT + 4)
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert took < HEAD_TIMEOUT + 3
    with _conn(tight.url) as s:  # connected, never a byte: closed silently
        data, took = _read_until_closed(s, HEAD_TIMEOUT + 4)
    assert data == b"" and took < HEAD_TIMEOUT + 3


def test_a_slow_partial_body_gets_408_and_releases_the_in_flight_gauge(tight: Gateway) -> None:
    body = orjson.dumps(chat_body(content="a" * 500))
    token = tight.mint()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {token}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\nx-request-id: slow-body-1\r\n\r\n"
    ).encode()
    with _conn(tight.url) as s:
        s.sendall(head + body[:10])
        t0 = time.monotonic()
        time.sleep(0.3)
        assert _gauge(tight, "gateway_in_flight_requests") >= 1
        # Slowloris: a byte every 0.2 s would last far beyond the deadline; the whole body has one.
        data = b""
        s.settimeout(0.2)
        for i in range(10, min(len(body), 60)):
            try:
                s.sendall(body[i : i + 1])
                data += s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if data:
                break
        rest, _ = _read_until_closed(s, 5)
        data += rest
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert time.monotonic() - t0 < BODY_TIMEOUT + 3
    deadline = time.monotonic() + 5
    while _gauge(tight, "gateway_in_flight_requests") != 0:
        assert time.monotonic() < deadline, "in-flight gauge pinned by a partial body"
        time.sleep(0.05)
    rec = next(a for a in tight.audit() if a["request_id"] == "slow-body-1")
    assert rec["status"] == 499


# ------------------------------------------------------------------ item 5: connection cap
def test_connections_beyond_the_cap_are_refused_and_probes_still_answer(
    tmp_path: Path, keys: Keys, rbac_file: Path, upstream: Upstream
) -> None:
    cap = 4
    env = gateway_env(keys, rbac_file, upstream.url, tmp_path / "audit.log", GATEWAY_MAX_CONNECTIONS=str(cap))
    proc, url = start_gateway("gw-cap", env, tmp_path, keys)
    try:
        g = Gateway(url, proc, tmp_path / "audit.log", keys, env)
        held = [socket.create_connection(_addr(url), timeout=5) for _ in range(cap)]
        try:
            time.sleep(0.2)
            with _conn(url) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
                with contextlib.suppress(OSError):
                    data, _ = _read_until_closed(s, 5)
            assert not data.startswith(b"HTTP/1.1 200"), data[:100]
            # The internal port has its own budget: probes and scrapes still answer.
            assert httpx.get(f"{g.internal_url}/healthz", timeout=5).status_code == 200
            assert "gateway_in_flight_requests" in g.metrics()
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 5
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not take connections again"
            time.sleep(0.1)
    finally:
        proc.stop()
