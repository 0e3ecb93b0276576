"""Readiness, the audit log and the metrics."""

from __future__ import annotations

import time

import httpx

from .conftest import HASH_KEY, Gateway, Upstream, chat_body


def _wait_ready(client: httpx.Client, want: bool, timeout: float = 5) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get("/readyz")
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
    text = client.get("/metrics").text
    for name in (
        'gateway_requests_total{model="ok",route="/v1/chat/completions",status="200"}',
        "gateway_request_duration_seconds_bucket",
        "gateway_time_to_first_token_seconds_bucket",
        'gateway_prompt_tokens_total{model="ok"}',
        'gateway_completion_tokens_total{model="ok"}',
        "gateway_in_flight_requests",
    ):
        assert name in text, name
