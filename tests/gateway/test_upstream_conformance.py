"""Upstream HTTP conformance: a misbehaving upstream (raw sockets, tests/gateway/raw_upstream.py)
behind a real gateway process. No reply ever reaches a request other than its own, a POST that
was written is never re-sent, the pool wait is bounded, oversized replies are capped. Every case
runs against both upstream clients (`GATEWAY_UPSTREAM_CLIENT`: h1, aiohttp)."""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Gateway, Keys, assert_openai_error, gateway_env, start_gateway
from .raw_upstream import RawUpstream

MODELS = [
    "ok",
    "continue",
    "smuggle",
    "late-smuggle",
    "close-after-read",
    "http10",
    "conn-close",
    "chunked-odd",
    "sse-crlf",
    "huge",
    "huge-stream",
    "slow",
]


@pytest.fixture(scope="module")
def raw() -> Iterator[RawUpstream]:
    server = RawUpstream(MODELS).start()
    try:
        yield server
    finally:
        server.stop()


def _gateway(tmp: Path, keys: Keys, rbac_file: Path, raw: RawUpstream, name: str, **extra: str) -> Iterator[Gateway]:
    audit = tmp / f"{name}-audit.log"
    env = gateway_env(keys, rbac_file, raw.url, audit, GATEWAY_UPSTREAM_MAX_RESPONSE_BYTES="100000", **extra)
    proc, url = start_gateway(name, env, tmp, keys)
    try:
        yield Gateway(url, proc, audit, keys, env)
    finally:
        proc.stop()


CLIENTS = ["h1", "aiohttp"]


@pytest.fixture(scope="module", params=CLIENTS)
def gw(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    keys: Keys,
    rbac_file: Path,
    raw: RawUpstream,
) -> Iterator[Gateway]:
    # One upstream connection: every exchange reuses it, so a leftover reply would surface.
    client = request.param
    yield from _gateway(
        tmp_path_factory.mktemp(f"conf-{client}"),
        keys,
        rbac_file,
        raw,
        f"gw-conformance-{client}",
        GATEWAY_UPSTREAM_MAX_CONNECTIONS="1",
        GATEWAY_UPSTREAM_CLIENT=client,
    )


def ask(gw: Gateway, model: str, text: str | None = None, **kw: object) -> httpx.Response:
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": text or uuid.uuid4().hex}], **kw}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=gw.auth(roles=("admin",)), timeout=10)


def own_reply(gw: Gateway) -> None:
    """The next request gets its own reply, not something left over on the connection."""
    marker = uuid.uuid4().hex
    r = ask(gw, "ok", marker)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == marker


def test_interim_1xx_replies_are_skipped(gw: Gateway) -> None:
    for _ in range(3):
        marker = uuid.uuid4().hex
        r = ask(gw, "continue", marker)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == marker
        own_reply(gw)


def test_bytes_after_a_complete_message_never_reach_the_next_request(gw: Gateway) -> None:
    r = ask(gw, "smuggle")
    assert r.status_code == 502  # an empty body is not a completion
    assert "SMUGGLED" not in r.text
    for _ in range(3):
        own_reply(gw)


def test_an_unsolicited_reply_on_an_idle_connection_is_not_delivered(gw: Gateway) -> None:
    for _ in range(3):
        marker = uuid.uuid4().hex
        r = ask(gw, "late-smuggle", marker)
        assert r.json()["choices"][0]["message"]["content"] == marker
        time.sleep(0.15)  # the stray reply lands while the connection idles in the pool
        r2 = ask(gw, "ok", "second")
        assert "SMUGGLED" not in r2.text
        if r2.status_code == 200:
            assert r2.json()["choices"][0]["message"]["content"] == "second"


def test_a_post_the_upstream_read_is_never_resent(gw: Gateway, raw: RawUpstream) -> None:
    before = raw.received["close-after-read"]
    own_reply(gw)  # a warm keep-alive connection first: the close happens on a reused connection
    assert_openai_error(ask(gw, "close-after-read"), 502)
    assert_openai_error(ask(gw, "close-after-read", stream=True), 502)
    assert raw.received["close-after-read"] == before + 2  # once per request: no duplicate generation
    own_reply(gw)


@pytest.mark.parametrize("model", ["http10", "conn-close", "chunked-odd"])
def test_framing_variants(model: str, gw: Gateway) -> None:
    for _ in range(2):
        marker = uuid.uuid4().hex
        r = ask(gw, model, marker)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == marker
        own_reply(gw)


def test_crlf_sse_and_data_without_space(gw: Gateway) -> None:
    marker = uuid.uuid4().hex
    r = ask(gw, "sse-crlf", marker, stream=True)
    assert r.status_code == 200
    datas = [ln.removeprefix("data:").strip() for ln in r.text.splitlines() if ln.startswith("data:")]
    assert datas[-1] == "[DONE]" and '"error"' not in r.text
    assert json.loads(datas[0])["choices"][0]["delta"]["content"] == marker
    rec = gw.audit()[-1]
    assert rec["status"] == 200 and rec["model"] == "sse-crlf"
    own_reply(gw)


def test_oversized_replies_are_capped(gw: Gateway) -> None:
    assert_openai_error(ask(gw, "huge"), 502)
    r = ask(gw, "huge-stream", stream=True)
    assert r.status_code == 200 and len(r.content) < 300_000
    assert '"upstream_error"' in r.text and r.text.rstrip().endswith("data: [DONE]")
    assert gw.audit()[-1]["status"] == 502
    own_reply(gw)


def test_concurrent_mixed_traffic_gets_only_its_own_replies(gw: Gateway) -> None:
    # (Not late-smuggle: a stray reply that arrives after the next request was written cannot be
    # told apart from that request's reply by any HTTP/1.1 client; the sequential test covers it.)
    models = ["ok", "continue", "chunked-odd", "conn-close", "smuggle", "http10"] * 4

    def one(model: str) -> None:
        marker = uuid.uuid4().hex
        r = ask(gw, model, marker)
        assert "SMUGGLED" not in r.text
        if model != "smuggle":
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == marker

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        for f in [ex.submit(one, m) for m in models]:
            f.result(timeout=30)


@pytest.mark.parametrize("client", CLIENTS)
def test_pool_wait_is_bounded_then_503(
    client: str, tmp_path: Path, keys: Keys, rbac_file: Path, raw: RawUpstream
) -> None:
    for g in _gateway(
        tmp_path,
        keys,
        rbac_file,
        raw,
        f"gw-pool-{client}",
        GATEWAY_UPSTREAM_CLIENT=client,
        GATEWAY_UPSTREAM_MAX_CONNECTIONS="2",
        GATEWAY_UPSTREAM_POOL_TIMEOUT_SECONDS="0.3",
    ):
        httpx.get(f"{g.internal_url}/readyz", timeout=5)
        g.proc.wait_http(f"{g.internal_url}/readyz", timeout=10)
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            slow = [ex.submit(ask, g, "slow", None, stream=True) for _ in range(2)]
            time.sleep(0.5)  # both connections are now busy for ~3 s
            t0 = time.monotonic()
            r = ask(g, "ok")
            waited = time.monotonic() - t0
            assert_openai_error(r, 503)
            assert waited < 1.5, waited
            time.sleep(1.6)  # the readiness probe shares the pool: it cannot generate either
            assert httpx.get(f"{g.internal_url}/readyz", timeout=5).status_code == 503
            assert all(f.result(timeout=10).status_code == 200 for f in slow)
        rec = [a for a in g.audit() if a["model"] == "ok"][-1]
        assert rec["status"] == 503
