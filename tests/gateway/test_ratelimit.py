"""Rate limits: RPM and TPM per subject, 429 with Retry-After, shared through a real Redis."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.gateway.ratelimit import Decision, MemoryLimiter
from pipeline.runtime.procs import ManagedProcess, free_port
from pipeline.runtime.tools import require

from .conftest import Gateway, Keys, Upstream, assert_openai_error, chat_body, gateway_env, start_gateway


def test_bucket_arithmetic() -> None:
    lim = MemoryLimiter()
    assert lim.take("k", 2, 100, 40).allowed
    assert lim.take("k", 2, 100, 40).allowed
    d = lim.take("k", 2, 100, 10)
    assert not d.allowed and d.reason == "requests" and d.retry_after > 0
    lim2 = MemoryLimiter()
    assert lim2.take("k", 100, 100, 60).allowed
    d = lim2.take("k", 100, 100, 60)
    assert not d.allowed and d.reason == "tokens" and 0 < d.retry_after <= 60
    # Settling: the reply used 30 fewer tokens than estimated → they come back.
    lim2.adjust("k", 100, 100, -30)
    assert lim2.take("k", 100, 100, 60).allowed
    assert lim2.take("k", 100, 100, 1000).reason == "too_large"


def test_rpm_limit_429(gateway: Gateway, client: httpx.Client) -> None:
    headers = gateway.auth(sub="rpm-user", roles=("limited",))
    statuses = [client.post("/v1/chat/completions", json=chat_body(), headers=headers) for _ in range(4)]
    assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
    r = statuses[3]
    err = assert_openai_error(r, 429)
    assert err["code"] == "rate_limit_exceeded"
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-limit-requests"] == "3"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    # Another subject is not affected.
    assert (
        client.post(
            "/v1/chat/completions", json=chat_body(), headers=gateway.auth(sub="other", roles=("limited",))
        ).status_code
        == 200
    )
    rec = [a for a in gateway.audit() if a["status"] == 429][-1]
    assert rec["ratelimit"] == "deny:requests"
    assert "gateway_rate_limited_total" in gateway.metrics()


def test_tpm_settled_with_reported_usage(gateway: Gateway, client: httpx.Client) -> None:
    # tier "tiny": 300 tokens/min; each request is estimated at ~205 tokens, the upstream reports 10.
    # Without settling the second request would be refused; with it, all pass.
    headers = gateway.auth(sub="tpm-user", roles=("tokenlimited",))
    for _ in range(4):
        r = client.post("/v1/chat/completions", json=chat_body(max_tokens=200), headers=headers)
        assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit-tokens"] == "300"


def test_request_larger_than_tpm(gateway: Gateway, client: httpx.Client, upstream: Upstream) -> None:
    upstream.reset()
    headers = gateway.auth(sub="big", roles=("tokenlimited",))
    r = client.post("/v1/chat/completions", json=chat_body(content="w" * 1600, max_tokens=200), headers=headers)
    # It can never fit: 400 (the OpenAI SDK does not retry it), no Retry-After.
    err = assert_openai_error(r, 400, param="max_tokens")
    assert "limit" in err["message"] and err["code"] == "request_too_large"
    assert "retry-after" not in r.headers
    assert upstream.state()["requests"] == 0


@dataclass
class RedisPair:
    redis: ManagedProcess
    a: Gateway
    b: Gateway


def redis_gateways(
    gws: list[Gateway], prefix: str, port: int, work: Path, keys: Keys, rbac_file: Path, upstream: Upstream
) -> None:
    """Start two gateway processes sharing the Redis on `port` into `gws` (the caller stops them)."""
    for name in ("a", "b"):
        audit = work / f"audit-{prefix}-{name}.log"
        env = gateway_env(
            keys,
            rbac_file,
            upstream.url,
            audit,
            GATEWAY_REDIS_URL=f"redis://127.0.0.1:{port}/0",
            GATEWAY_REDIS_RETRY_AFTER_SECONDS="30",
        )
        proc, url = start_gateway(f"{prefix}-{name}", env, work, keys)
        gws.append(Gateway(url, proc, audit, keys, env))


@pytest.fixture(scope="module")
def redis_pair(gw_dir: Path, keys: Keys, rbac_file: Path, upstream: Upstream) -> Iterator[RedisPair]:
    port = free_port()
    redis = ManagedProcess(
        "redis",
        [require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        gw_dir / "redis.log",
    ).start()
    gws: list[Gateway] = []
    try:
        redis_gateways(gws, "gateway-redis", port, gw_dir, keys, rbac_file, upstream)
        yield RedisPair(redis, gws[0], gws[1])
    finally:
        for g in gws:
            g.proc.stop()
        redis.stop()


@pytest.mark.slow
def test_limit_shared_across_gateways_and_redis_outage(redis_pair: RedisPair) -> None:
    a, b = redis_pair.a, redis_pair.b
    token = a.mint(sub="shared-user", roles=("limited",))  # 3 requests/minute in total
    h = {"authorization": f"Bearer {token}"}
    got = [httpx.post(f"{g.url}/v1/chat/completions", json=chat_body(), headers=h).status_code for g in (a, b, a, b)]
    assert got == [200, 200, 200, 429]
    assert [x["ratelimit_backend"] for x in a.audit()][-1] == "redis"

    # Redis dies: no 5xx, limits fall back to each process (fail open to local limits) and
    # continue from the shared state each process last saw: the spent subject stays limited.
    redis_pair.redis.stop()
    got = [
        httpx.post(f"{g.url}/v1/chat/completions", json=chat_body(), headers=h, timeout=5).status_code for g in (a, b)
    ]
    assert got == [429, 429]
    h2 = {"authorization": f"Bearer {a.mint(sub='during-outage', roles=('limited',))}"}
    got = [
        httpx.post(f"{a.url}/v1/chat/completions", json=chat_body(), headers=h2, timeout=5).status_code
        for _ in range(4)
    ]
    assert got == [200, 200, 200, 429]
    assert a.audit()[-1]["ratelimit_backend"] == "fallback"
    assert (
        "gateway_ratelimit_backend_errors_total 1" in a.metrics()
        or "gateway_ratelimit_backend_errors_total" in a.metrics()
    )


def _redis(port: int, data_dir: Path, log: Path) -> ManagedProcess:
    """A Redis that keeps its state across a restart (AOF, fsync per write), ready to answer."""
    argv = [require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(data_dir)]
    proc = ManagedProcess("redis", argv, log).start()
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            pass
        assert time.monotonic() < deadline, "redis did not start"
        time.sleep(0.05)


@pytest.mark.slow
def test_redis_restart_costs_no_extra_requests(tmp_path: Path, keys: Keys, rbac_file: Path, upstream: Upstream) -> None:
    # Old behaviour: the first call after the restart failed on the dead pooled connection and
    # each process fell back to its own full local bucket (3 RPM subject, 2 processes: 4 of 4 allowed).
    port = free_port()
    redis = _redis(port, tmp_path, tmp_path / "redis.log")
    gws: list[Gateway] = []
    try:
        redis_gateways(gws, "gw-restart", port, tmp_path, keys, rbac_file, upstream)
        a, b = gws
        h = {"authorization": f"Bearer {a.mint(sub='restart-user', roles=('limited',))}"}  # 3 per minute

        def call(g: Gateway) -> int:
            return httpx.post(f"{g.url}/v1/chat/completions", json=chat_body(), headers=h, timeout=5).status_code

        assert [call(a), call(b)] == [200, 200]
        redis.stop()
        redis = _redis(port, tmp_path, tmp_path / "redis.log")
        got = [call(g) for g in (a, b, a, b)]
        assert got.count(200) <= 1 + 2, got  # at most one extra request per process
        assert got == [200, 429, 429, 429], got
        for g in gws:
            assert g.audit()[-1]["ratelimit_backend"] == "redis"
    finally:
        for g in gws:
            g.proc.stop()
        redis.stop()


def test_redis_server_available() -> None:
    out = subprocess.run([require("redis-server"), "--version"], capture_output=True, text=True, check=True)
    assert "Redis server" in out.stdout


def test_header_pairs_match_headers() -> None:
    """The bytes fast path renders exactly the documented rate-limit headers."""
    for d in (
        Decision(True, "ok", "memory", 600, 598.25, 600000, 123456.789, 0.0),
        Decision(False, "tokens", "memory", 3, 0.4, 300, -12.5, 2.2),
    ):
        assert d.header_pairs() == [(k.encode(), v.encode()) for k, v in d.headers().items()]
