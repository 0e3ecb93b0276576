"""Upstream failures map to 502/503/504 promptly; a stream that breaks ends with an SSE error event."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import (
    Gateway,
    Keys,
    Upstream,
    assert_openai_error,
    chat_body,
    gateway_env,
    refused_port,
    start_gateway,
)


@pytest.mark.parametrize(("model", "status"), [("err500", 502), ("malformed", 502), ("hang", 504)])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_map(model: str, status: int, stream: bool, gateway: Gateway, client: httpx.Client) -> None:
    t0 = time.monotonic()
    r = client.post(
        "/v1/chat/completions", json=chat_body(model, stream=stream), headers=gateway.auth(roles=("admin",))
    )
    if stream and model == "malformed":
        # A 200 that is not SSE: the stream ends with an error event instead.
        assert r.status_code == 200
        assert '"error"' in r.text and r.text.rstrip().endswith("data: [DONE]")
    else:
        assert_openai_error(r, status)
    assert time.monotonic() - t0 < 4  # the test gateway's read timeout is 1.5 s


def test_upstream_4xx_passes_through(gateway: Gateway, client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json=chat_body("reject400"), headers=gateway.auth(roles=("admin",)))
    assert r.status_code == 400 and "context too long" in r.text


def test_midstream_death_ends_with_error_event(gateway: Gateway) -> None:
    body = chat_body("die-midstream", stream=True)
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth(roles=("admin",))
    ) as r:
        assert r.status_code == 200
        events = [ln[len("data: ") :] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert len(events) >= 3
    assert json.loads(events[-2])["error"]["code"] == "upstream_error"
    assert events[-1] == "[DONE]"
    assert 'gateway_upstream_errors_total{kind="protocol"}' in gateway.metrics()


def test_client_disconnect_cancels_upstream(gateway: Gateway, upstream: Upstream) -> None:
    upstream.reset()
    body = chat_body("slow-stream", stream=True)
    headers = {**gateway.auth(), "x-request-id": "disconnect-1"}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break  # leave after the first chunk: closing the response drops the connection
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and upstream.state()["cancelled"] == 0:
        time.sleep(0.05)
    st = upstream.state()
    assert st["cancelled"] == 1 and st["finished_streams"] == 0
    # The audit line records the disconnect (written when the relay closes: poll for it).
    deadline = time.monotonic() + 5
    while not (recs := [a for a in gateway.audit() if a["request_id"] == "disconnect-1"]):
        assert time.monotonic() < deadline, "no audit line for the disconnected stream"
        time.sleep(0.02)
    rec = [a for a in recs if a["model"] == "slow-stream"][-1]
    assert rec["status"] == 499


@pytest.fixture(scope="module")
def dead_upstream_gateway(gw_dir: Path, keys: Keys, rbac_file: Path) -> Iterator[Gateway]:
    audit = gw_dir / "audit-dead.log"
    # A bound socket that never listens: connections are refused for the fixture's lifetime
    # (a merely free port could be taken by another process meanwhile). Small timeouts, so
    # "promptly" below would fail if they were not honoured (the defaults are 2 s / 120 s).
    with refused_port() as port:
        env = gateway_env(
            keys,
            rbac_file,
            f"http://127.0.0.1:{port}",
            audit,
            GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECONDS="1",
            GATEWAY_UPSTREAM_READ_TIMEOUT_SECONDS="1",
            GATEWAY_READY_PROBE_TIMEOUT="1",
        )
        proc, url = start_gateway("gateway-dead", env, gw_dir, keys)
        try:
            yield Gateway(url, proc, audit, keys, env)
        finally:
            proc.stop()


def test_refused_upstream_is_503_and_not_ready(dead_upstream_gateway: Gateway) -> None:
    g = dead_upstream_gateway
    with httpx.Client(base_url=g.url) as c:
        t0 = time.monotonic()
        assert_openai_error(c.post("/v1/chat/completions", json=chat_body(), headers=g.auth()), 503)
        assert_openai_error(c.post("/v1/chat/completions", json=chat_body(stream=True), headers=g.auth()), 503)
        assert_openai_error(c.get("/v1/models", headers=g.auth()), 503)
        # Promptly: far below the 120 s read-timeout default, generous for a shared machine.
        assert time.monotonic() - t0 < 10
        assert c.get("/healthz").status_code == 200
        r = httpx.get(f"{g.internal_url}/readyz", timeout=5)
        assert r.status_code == 503 and r.json()["ready"] is False


def test_unary_client_disconnect_cancels_upstream(gateway: Gateway, upstream: Upstream) -> None:
    upstream.reset()
    headers = {**gateway.auth(roles=("admin",)), "x-request-id": "unary-disconnect-1"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}/v1/chat/completions", json=chat_body("slow-unary"), headers=headers, timeout=0.4)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and upstream.state()["cancelled"] == 0:
        time.sleep(0.05)
    assert upstream.state()["cancelled"] == 1
    deadline = time.monotonic() + 3
    while not (recs := [a for a in gateway.audit() if a["request_id"] == "unary-disconnect-1"]):
        assert time.monotonic() < deadline, "no audit line for the disconnected request"
        time.sleep(0.02)
    assert recs[-1]["status"] == 499


def test_midstream_error_event_counts_as_an_error(gateway: Gateway, client: httpx.Client) -> None:
    headers = {**gateway.auth(roles=("admin",)), "x-request-id": "midstream-error-1"}
    r = client.post("/v1/chat/completions", json=chat_body("error-midstream", stream=True), headers=headers)
    assert r.status_code == 200 and "engine died" in r.text and r.text.rstrip().endswith("data: [DONE]")
    rec = [a for a in gateway.audit() if a["request_id"] == "midstream-error-1"][-1]
    assert rec["status"] == 502 and rec["error"] == "upstream_stream_error"
    metrics = gateway.metrics()
    assert any(
        ln.startswith("gateway_requests_total{")
        and 'model="error-midstream"' in ln
        and 'status="502"' in ln
        and 'cause="release"' in ln  # the model server failing is the release's fault
        for ln in metrics.splitlines()
    )
