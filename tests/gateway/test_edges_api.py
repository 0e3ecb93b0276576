"""Issue 21, API edges: a stream whose client leaves before the upstream's headers is cancelled (2),
vLLM's removed guided_* fields are refused (3), every rendered prompt field is counted (4), vLLM's
errors reach clients in OpenAI's shape with the estimate refunded and rate-limit headers on streams
(6), `priority` is under RBAC (7), JWT claim names and NumericDates (8), /v1/embeddings and
/v1/responses proxied like chat (10). A real gateway process in front of a vLLM stand-in
(tests/gateway/api_upstream.py) on loopback."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from ruamel.yaml import YAML

from .api_upstream import CONTEXT, ApiUpstream
from .conftest import Gateway, Keys, assert_openai_error, gateway_env, start_gateway

RBAC: dict[str, Any] = {
    "tiers": {
        "standard": {"requests_per_minute": 100000, "tokens_per_minute": 100000000},
        "tiny": {"requests_per_minute": 1000, "tokens_per_minute": 300},
    },
    "roles": {
        "user": {"models": ["*"], "max_tokens": 1024, "tier": "standard"},
        "scheduler": {"models": ["*"], "max_tokens": 1024, "tier": "standard", "priority": True},
        "tiny": {"models": ["*"], "max_tokens": 200, "tier": "tiny"},
    },
}
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def api_upstream() -> Iterator[ApiUpstream]:
    server = ApiUpstream().start()
    try:
        yield server
    finally:
        server.stop()


def _start(tmp: Path, keys: Keys, upstream: ApiUpstream, name: str, **extra: str) -> Iterator[Gateway]:
    rbac = tmp / f"{name}-rbac.yaml"
    with rbac.open("w") as fh:
        YAML(typ="safe", pure=True).dump(RBAC, fh)
    audit = tmp / f"{name}-audit.log"
    env = gateway_env(keys, rbac, upstream.url, audit, GATEWAY_READY_PROBE_MODEL="ok", **extra)
    proc, url = start_gateway(name, env, tmp, keys)
    try:
        yield Gateway(url, proc, audit, keys, env)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, keys: Keys, api_upstream: ApiUpstream) -> Iterator[Gateway]:
    # A long read timeout, so a hung upstream is noticed only through the client's disconnect.
    yield from _start(
        tmp_path_factory.mktemp("edges-api"),
        keys,
        api_upstream,
        "gw-edges-api",
        GATEWAY_UPSTREAM_READ_TIMEOUT_SECONDS="60",
        GATEWAY_MAX_PROMPT_CHARS="100000",
        GATEWAY_MAX_BODY_BYTES="400000",
        GATEWAY_MAX_TOKENS="4096",
    )


def post(gw: Gateway, path: str, body: dict[str, Any], roles: tuple[str, ...] = ("user",), **kw: Any) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json=body, headers=gw.auth(roles=roles, **kw), timeout=10)


def chat(content: str = "hi", **kw: Any) -> dict[str, Any]:
    return {"model": "ok", "messages": [{"role": "user", "content": content}], **kw}


def audit_for(gw: Gateway, pred: Any, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        recs = [a for a in gw.audit() if pred(a)]
        if recs:
            return recs[-1]
        assert time.monotonic() < deadline, "no matching audit line"
        time.sleep(0.05)


# ---------------------------------------------------------------- 2: cancelled before the upstream's headers
@pytest.mark.parametrize("path", [CHAT, "/v1/responses"])
def test_stream_client_leaving_before_upstream_headers_cancels_upstream(
    gw: Gateway, api_upstream: ApiUpstream, path: str
) -> None:
    body: dict[str, Any] = {"model": "hang-headers", "stream": True, "max_tokens": 8}
    if path == CHAT:
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body = {"model": "hang-headers", "input": "hi", "stream": True, "max_output_tokens": 8}
    rid = f"leave-early-{path.rsplit('/', 1)[-1]}"
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-ID: {rid}\r\n"
        f"Authorization: Bearer {gw.mint(roles=('user',))}\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head + payload)
        time.sleep(0.5)  # the request is upstream, which sends nothing
    left = time.monotonic()
    rec = audit_for(gw, lambda a: a["request_id"] == rid)
    # The upstream connection was dropped at once (vLLM aborts the request), not at the read timeout (60 s).
    deadline = time.monotonic() + 5
    while rec["upstream_request_id"] not in api_upstream.dropped:
        assert time.monotonic() < deadline, "the gateway kept the hung upstream request open"
        time.sleep(0.02)
    assert api_upstream.dropped[rec["upstream_request_id"]] - left < 3
    assert rec["status"] == 499 and rec["error"] == "client_closed"
    assert rec["latency_ms"] < 3000 and rec["ttft_ms"] is None


# ---------------------------------------------------------------- 3: removed guided_* fields
@pytest.mark.parametrize(
    ("field", "value", "replacement"),
    [
        ("guided_json", {"type": "object"}, "structured_outputs"),
        ("guided_regex", "a+", "structured_outputs"),
        ("guided_choice", ["a", "b"], "structured_outputs"),
        ("guided_grammar", "root ::= 'a'", "structured_outputs"),
        ("guided_whitespace_pattern", " ", "structured_outputs"),
        ("guided_decoding_backend", "xgrammar", "server setting"),
    ],
)
def test_removed_guided_fields_are_refused_naming_the_replacement(
    gw: Gateway, field: str, value: Any, replacement: str
) -> None:
    for path, body in ((CHAT, chat(max_tokens=4)), ("/v1/completions", {"model": "ok", "prompt": "x"})):
        err = assert_openai_error(post(gw, path, {**body, field: value}), 400, param=field)
        assert replacement in err["message"] and "0.12" in err["message"]


def test_structured_outputs_are_checked_and_forwarded(gw: Gateway, api_upstream: ApiUpstream) -> None:
    so = {"json": {"type": "object"}, "disable_any_whitespace": True}
    assert post(gw, CHAT, chat(max_tokens=4, structured_outputs=so)).status_code == 200
    assert api_upstream.last(CHAT)["structured_outputs"] == so
    assert_openai_error(post(gw, CHAT, chat(structured_outputs={"jsonn": {}})), 400, param="structured_outputs.jsonn")


# ---------------------------------------------------------------- 4: every rendered field counts
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": json.dumps({"x": "y" * 120_000})}}
TOOL = {"type": "function", "function": {"name": "f", "description": "d" * 120_000, "parameters": {"type": "object"}}}
BIG_FIELDS = {
    "tool_calls.arguments": {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [CALL]}]
    },
    "tools.description": {"messages": [{"role": "user", "content": "hi"}], "tools": [TOOL]},
    "reasoning_content": {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "reasoning_content": "r" * 120_000}]
    },
}


@pytest.mark.parametrize("where", ["tool_calls.arguments", "tools.description", "reasoning_content"])
def test_prompt_cap_counts_tool_calls_tools_and_reasoning(gw: Gateway, where: str) -> None:
    r = post(gw, CHAT, {"model": "ok", "max_tokens": 4, **BIG_FIELDS[where]})
    err = assert_openai_error(r, 400, param="messages")
    assert err["code"] == "prompt_too_long"


def test_rate_limit_estimate_counts_tool_definitions(gw: Gateway) -> None:
    # Tier "tiny": 300 tokens per minute. ~1,500 characters of tool description are ~375 tokens.
    tool = {"type": "function", "function": {"name": "f", "description": "d" * 1500, "parameters": {}}}
    r = post(gw, CHAT, chat(max_tokens=1, tools=[tool]), roles=("tiny",), sub="estimate")
    assert assert_openai_error(r, 400, param="max_tokens")["code"] == "request_too_large"


def test_default_max_tokens_leaves_room_for_tool_definitions(gw: Gateway, api_upstream: ApiUpstream) -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "d" * 3500, "parameters": {}}}
    assert post(gw, CHAT, chat(tools=[tool])).status_code == 200
    sent = api_upstream.last(CHAT)["max_tokens"]
    assert 1 <= sent <= CONTEXT - 3500  # the role's cap (1024) would overflow the 4,096-token context


# ---------------------------------------------------------------- 6: error fidelity, refunds, headers on streams
@pytest.mark.parametrize("stream", [False, True])
def test_context_length_refusal_in_openai_shape(gw: Gateway, stream: bool) -> None:
    r = post(gw, CHAT, {**chat(max_tokens=4), "model": "too-long", "stream": stream})
    err = assert_openai_error(r, 400, param="messages")
    assert err["type"] == "invalid_request_error" and err["code"] == "context_length_exceeded"
    assert "maximum context length is 4096" in err["message"]
    assert r.headers["x-ratelimit-limit-tokens"] == "100000000"
    sdk = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.mint(roles=("user",)), max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        sdk.chat.completions.create(model="too-long", messages=[{"role": "user", "content": "x"}], stream=stream)
    assert exc.value.code == "context_length_exceeded"


def test_refused_requests_refund_the_token_estimate(gw: Gateway) -> None:
    # 300 tokens per minute; each request is estimated at ~200 tokens (max_tokens 199): without the
    # refund the second refused request would already be rate limited.
    for i in range(4):
        r = post(gw, CHAT, {**chat(max_tokens=199), "model": "too-long"}, roles=("tiny",), sub="refund")
        assert r.status_code == 400, (i, r.text)
    assert post(gw, CHAT, chat(max_tokens=199), roles=("tiny",), sub="refund").status_code == 200


def test_ratelimit_headers_on_streams(gw: Gateway) -> None:
    headers = gw.auth(roles=("user",))
    for path, body in (
        (CHAT, chat(max_tokens=4, stream=True)),
        ("/v1/responses", {"model": "ok", "input": "x", "stream": True}),
    ):
        with httpx.stream("POST", f"{gw.url}{path}", json=body, headers=headers, timeout=10) as r:
            assert r.status_code == 200
            assert r.headers["x-ratelimit-limit-requests"] == "100000"
            assert int(r.headers["x-ratelimit-remaining-tokens"]) > 0
            r.read()


# ---------------------------------------------------------------- 7: priority under RBAC
def test_priority_only_for_roles_granted_it(gw: Gateway, api_upstream: ApiUpstream) -> None:
    err = assert_openai_error(post(gw, CHAT, chat(max_tokens=4, priority=-10)), 403, param="priority")
    assert err["code"] == "priority_not_allowed"
    assert_openai_error(post(gw, "/v1/embeddings", {"model": "ok", "input": "x", "priority": 1}), 403, param="priority")
    assert post(gw, CHAT, chat(max_tokens=4, priority=0)).status_code == 200  # vLLM's default: no change
    assert post(gw, CHAT, chat(max_tokens=4, priority=-10), roles=("user", "scheduler")).status_code == 200
    assert api_upstream.last(CHAT)["priority"] == -10


# ---------------------------------------------------------------- 8: JWT claims
@pytest.fixture(scope="module")
def url_claim_gw(tmp_path_factory: pytest.TempPathFactory, keys: Keys, api_upstream: ApiUpstream) -> Iterator[Gateway]:
    yield from _start(
        tmp_path_factory.mktemp("edges-jwt"),
        keys,
        api_upstream,
        "gw-edges-jwt",
        GATEWAY_JWT_ROLES_CLAIM="https://app.example.com/roles",
    )


def test_roles_claim_named_by_a_url(url_claim_gw: Gateway) -> None:
    gw = url_claim_gw
    ok = post(gw, CHAT, chat(max_tokens=4), roles=(), **{"https://app.example.com/roles": ["user"]})
    assert ok.status_code == 200, ok.text
    # Without the claim the token has no role at all.
    assert assert_openai_error(post(gw, CHAT, chat(max_tokens=4), roles=("user",)), 403)["code"] == "no_role"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_numeric_string_dates_are_refused(gw: Gateway, claim: str) -> None:
    now = int(time.time())
    value = {"exp": str(now + 600), "nbf": str(now - 10), "iat": str(now - 10)}[claim]
    err = assert_openai_error(post(gw, CHAT, chat(max_tokens=4), **{claim: value}), 401)
    assert f"'{claim}'" in err["message"] or f"({claim})" in err["message"]
    assert "number" in err["message"] or "integer" in err["message"]


def test_future_iat_has_its_own_message(gw: Gateway) -> None:
    err = assert_openai_error(post(gw, CHAT, chat(max_tokens=4), iat=int(time.time()) + 3600), 401)
    assert "(iat)" in err["message"] and "future" in err["message"]


# ---------------------------------------------------------------- 10: embeddings and responses
def test_sdk_embeddings_and_responses_through_the_gateway(gw: Gateway, api_upstream: ApiUpstream) -> None:
    sdk = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.mint(sub="sdk-10", roles=("user",)), max_retries=0)
    emb = sdk.embeddings.create(model="ok", input=["a", "b"])
    assert [d.index for d in emb.data] == [0, 1] and emb.usage.prompt_tokens == 8
    out = sdk.responses.create(model="ok", input="hi", max_output_tokens=8)
    assert out.output_text == "a b c"
    events = list(sdk.responses.create(model="ok", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "a b"
    # Default output bound for a request that names none, as for chat.
    assert 1 <= api_upstream.last("/v1/responses")["max_output_tokens"] <= 1024
    recs = [a for a in gw.audit() if a["route"] in ("/v1/embeddings", "/v1/responses") and a["status"] == 200]
    assert {(a["route"], a["stream"], a["prompt_tokens"]) for a in recs} >= {
        ("/v1/embeddings", False, 8),
        ("/v1/responses", False, 5),
        ("/v1/responses", True, 5),
    }
    lines = gw.metrics().splitlines()
    for route in ("/v1/embeddings", "/v1/responses"):
        assert any(
            ln.startswith("gateway_requests_total{") and f'route="{route}"' in ln and 'status="200"' in ln
            for ln in lines
        ), route


def test_embeddings_and_responses_are_checked_like_chat(gw: Gateway) -> None:
    assert httpx.post(f"{gw.url}/v1/embeddings", json={"model": "ok", "input": "x"}).status_code == 401
    assert_openai_error(
        post(gw, "/v1/embeddings", {"model": "ok", "input": "x", "request_id": "r"}), 400, param="request_id"
    )
    assert_openai_error(post(gw, "/v1/embeddings", {"model": "ok", "input": "x" * 100_001}), 400, param="input")
    assert_openai_error(post(gw, "/v1/embeddings", {"model": "nope", "input": "x"}), 404, param="model")
    assert_openai_error(post(gw, "/v1/responses", {"model": "ok", "input": "x", "max_output_tokens": 5000}), 400)
    assert_openai_error(
        post(gw, "/v1/responses", {"model": "ok", "input": "x", "previous_response_id": "resp_1"}),
        400,
        param="previous_response_id",
    )
    big = [{"type": "function_call_output", "call_id": "c", "output": "o" * 100_001}]
    assert_openai_error(post(gw, "/v1/responses", {"model": "ok", "input": big}), 400, param="input")
    err = assert_openai_error(post(gw, "/v1/responses", {"model": "too-long", "input": "x"}), 400, param="input")
    assert err["code"] == "context_length_exceeded"
    assert_openai_error(post(gw, "/v1/embeddings", {"model": "ok", "input": "x"}, roles=("nobody",)), 403)
