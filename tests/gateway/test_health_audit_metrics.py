"""Readiness, the audit log and the metrics."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import (
    HASH_KEY,
    Gateway,
    Keys,
    Upstream,
    chat_body,
    gateway_env,
    internal_url,
    refused_port,
    start_gateway,
)


def _wait_ready(client: httpx.Client, want: bool, timeout: float = 5) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{internal_url(str(client.base_url).rstrip('/'))}/readyz", timeout=5)
        if (r.status_code == 200) == want or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_ready_needs_health_and_generation(client: httpx.Client, upstream: Upstream) -> None:
    assert _wait_ready(client, True).status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    try:
        upstream.set(gen_fail=True)  # /health still 200, but generation fails
        r = _wait_ready(client, False)
        assert r.status_code == 503 and r.json()["upstream_health"] is True
        upstream.set(gen_fail=False, health=503)
        r = _wait_ready(client, False)
        assert r.status_code == 503
    finally:
        upstream.set(gen_fail=False, health=200)
    assert _wait_ready(client, True).status_code == 200


def test_audit_line_fields_and_privacy(gateway: Gateway, client: httpx.Client) -> None:
    secret_prompt = "my secret medical question"
    r = client.post(
        "/v1/chat/completions",
        json=chat_body(content=secret_prompt),
        headers={**gateway.auth(sub="carol@example.com"), "x-request-id": "audit-1"},
    )
    assert r.status_code == 200
    raw = gateway.audit_log.read_text()
    assert secret_prompt not in raw and "carol@example.com" not in raw and "a b c" not in raw
    rec = next(a for a in gateway.audit() if a["request_id"] == "audit-1")
    import hashlib
    import hmac

    assert rec["subject"] == hmac.new(HASH_KEY.encode(), b"carol@example.com", hashlib.sha256).hexdigest()[:32]
    assert rec["roles"] == ["user"] and rec["model"] == "ok" and rec["route"] == "/v1/chat/completions"
    assert rec["status"] == 200 and rec["prompt_tokens"] == 7 and rec["completion_tokens"] == 3
    assert rec["ratelimit"] == "allow" and rec["latency_ms"] > 0 and rec["time"]


def test_audit_records_failures(gateway: Gateway, client: httpx.Client) -> None:
    client.get("/v1/models", headers={"authorization": "Bearer x.y.z", "x-request-id": "audit-401"})
    rec = next(a for a in gateway.audit() if a["request_id"] == "audit-401")
    assert rec["status"] == 401 and rec["subject"] is None


def test_metrics_exposed(gateway: Gateway, client: httpx.Client) -> None:
    client.post("/v1/chat/completions", json=chat_body(stream=True), headers=gateway.auth())
    text = gateway.metrics()
    for name in (
        # Every request carries the process's release; below 500 nobody is to blame (cause="none").
        'gateway_requests_total{cause="none",model="ok",release="0.3.0+gtest123",route="/v1/chat/completions",status="200"}',
        'gateway_request_duration_seconds_bucket{le="0.001",release="0.3.0+gtest123",route="/v1/chat/completions"}',
        "gateway_time_to_first_token_seconds_bucket",
        'gateway_prompt_tokens_total{model="ok"}',
        'gateway_completion_tokens_total{model="ok"}',
        "gateway_in_flight_requests",
    ):
        assert name in text, name


def _audit_record(g: Gateway, request_id: str, timeout: float = 5) -> dict[str, Any]:
    """The audit line of one request (a stream's line is written as its relay closes: poll)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = [a for a in g.audit() if a["request_id"] == request_id]
        if recs:
            return recs[-1]
        assert time.monotonic() < deadline, f"no audit line for {request_id}"
        time.sleep(0.02)


def _reply_text(r: httpx.Response, stream: bool) -> str:
    if not stream:
        choice = r.json()["choices"][0]
        return str(choice["message"]["content"] if "message" in choice else choice["text"])
    pieces = []
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[len("data: ") :])["choices"]:
                pieces.append((choice.get("delta") or {}).get("content") or choice.get("text") or "")
    return "".join(pieces)


def _echo_requests(g: Gateway, c: httpx.Client) -> list[tuple[str, str, str]]:
    """Unary and streaming chat + completions with a unique marker; the fake "echo" model
    replies with the marker reversed. Returns (request id, prompt marker, completion marker)."""
    out = []
    for route in ("/v1/chat/completions", "/v1/completions"):
        for stream in (False, True):
            marker = f"prompt-marker-{uuid.uuid4().hex}"
            rid = f"text-{uuid.uuid4().hex[:12]}"
            body: dict[str, Any] = (
                chat_body("echo", content=marker, stream=stream)
                if route == "/v1/chat/completions"
                else {"model": "echo", "prompt": marker, "max_tokens": 8, "stream": stream}
            )
            r = c.post(route, json=body, headers={**g.auth(roles=("admin",)), "x-request-id": rid})
            assert r.status_code == 200, r.text
            completion = marker[::-1]
            assert _reply_text(r, stream) == "echo:" + completion
            out.append((rid, marker, completion))
    return out


def test_audit_never_contains_prompt_or_completion_text_by_default(gateway: Gateway, client: httpx.Client) -> None:
    assert gateway.env.get("GATEWAY_AUDIT_INCLUDE_TEXT") is None  # the default
    sent = _echo_requests(gateway, client)
    for rid, _, _ in sent:
        rec = _audit_record(gateway, rid)
        assert rec["status"] == 200 and "text" not in rec
    raw = gateway.audit_log.read_text()
    for _, prompt, completion in sent:
        assert prompt not in raw and prompt[::-1] not in raw and completion not in raw


@pytest.fixture(scope="module")
def text_gateway(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, rbac_file: Path, upstream: Upstream
) -> Iterator[Gateway]:
    d = tmp_path_factory.mktemp("gw-text")
    audit = d / "audit.log"
    env = gateway_env(keys, rbac_file, upstream.url, audit, GATEWAY_AUDIT_INCLUDE_TEXT="true")
    proc, url = start_gateway("gateway-text", env, d, keys)
    try:
        yield Gateway(url, proc, audit, keys, env)
    finally:
        proc.stop()


def test_audit_include_text_logs_prompt_and_completion(text_gateway: Gateway) -> None:
    g = text_gateway
    with httpx.Client(base_url=g.url, timeout=10) as c:
        sent = _echo_requests(g, c)
    for rid, prompt, completion in sent:
        rec = _audit_record(g, rid)
        assert rec["status"] == 200
        assert prompt in str(rec["text"]["prompt"]), rec
        assert completion in str(rec["text"]["completion"]), rec
    raw = g.audit_log.read_text()
    assert all(p in raw and c in raw for _, p, c in sent)


def test_model_label_values_stay_bounded_without_a_model_list(tmp_path: Path, keys: Keys, rbac_file: Path) -> None:
    # Upstream unreachable: the model list is empty and requests fail upstream (503). Client-chosen
    # model names must not become metric label values (one series per name would grow without bound).
    with refused_port() as port:
        env = gateway_env(keys, rbac_file, f"http://127.0.0.1:{port}", tmp_path / "audit.log")
        proc, url = start_gateway("gw-labels", env, tmp_path, keys)
        try:
            g = Gateway(url, proc, tmp_path / "audit.log", keys, env)
            names = [f"made-up-{uuid.uuid4().hex[:8]}" for _ in range(5)]
            for name in names:
                r = httpx.post(f"{url}/v1/chat/completions", json=chat_body(name), headers=g.auth(roles=("admin",)))
                assert r.status_code == 503
            metrics = g.metrics()
            assert not any(name in metrics for name in names)
            assert 'model="unknown"' in metrics
        finally:
            proc.stop()


def test_cause_label_is_bounded_and_blames_dependencies_apart() -> None:
    from app.gateway import metrics

    assert metrics.cause(200, None) == metrics.cause(429, "rate_limited") == "none"
    assert metrics.cause(503, "jwks_unavailable") == "idp"
    for status, error in ((500, "internal"), (502, "upstream_stream_error"), (503, "upstream_busy"), (504, None)):
        assert metrics.cause(status, error) == "release"
    assert {metrics.cause(s, e) for s in (200, 500, 503) for e in (None, "x", "jwks_unavailable")} <= {
        "none",
        "release",
        "idp",
    }
