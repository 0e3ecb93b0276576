"""Input validation: bad requests get a 4xx naming the field, and never reach the upstream."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import Gateway, Upstream, assert_openai_error, chat_body

msg = [{"role": "user", "content": "hi"}]

CASES: dict[str, tuple[str, Any, int, str | None]] = {
    "missing_model": ("/v1/chat/completions", {"messages": msg}, 400, "model"),
    "missing_messages": ("/v1/chat/completions", {"model": "ok"}, 400, "messages"),
    "empty_messages": ("/v1/chat/completions", {"model": "ok", "messages": []}, 400, "messages"),
    "bad_role": (
        "/v1/chat/completions",
        {"model": "ok", "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages.0.role",
    ),
    "temperature_range": ("/v1/chat/completions", chat_body(temperature=7), 400, "temperature"),
    "max_tokens_zero": ("/v1/chat/completions", chat_body(max_tokens=0), 400, "max_tokens"),
    "max_tokens_type": ("/v1/chat/completions", chat_body(max_tokens="lots"), 400, "max_tokens"),
    "max_tokens_over_role": ("/v1/chat/completions", chat_body(max_tokens=300), 400, "max_tokens"),
    "max_completion_tokens_over_role": (
        "/v1/chat/completions",
        chat_body(max_completion_tokens=300),
        400,
        "max_completion_tokens",
    ),
    "n_too_big": ("/v1/chat/completions", chat_body(n=3), 400, "n"),
    "unknown_field": ("/v1/chat/completions", chat_body(hack=True), 400, "hack"),
    "too_many_messages": (
        "/v1/chat/completions",
        {"model": "ok", "messages": msg * 9, "max_tokens": 4},
        400,
        "messages",
    ),
    "prompt_too_long": ("/v1/chat/completions", chat_body(content="x" * 2500), 400, "messages"),
    "not_an_object": ("/v1/chat/completions", [1, 2], 400, None),
    "completion_prompt_type": ("/v1/completions", {"model": "ok", "prompt": 5}, 400, "prompt"),
    "completion_prompt_too_long": (
        "/v1/completions",
        {"model": "ok", "prompt": "y" * 2500, "max_tokens": 4},
        400,
        "prompt",
    ),
    "unknown_part": (
        "/v1/chat/completions",
        {"model": "ok", "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}}]}]},
        400,
        None,
    ),
    "too_many_parts": (
        "/v1/chat/completions",
        {"model": "ok", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 65}]},
        400,
        "messages.0.content",
    ),
    "unknown_message_field": (
        "/v1/chat/completions",
        {"model": "ok", "messages": [{"role": "user", "content": "x", "sneaky": 1}]},
        400,
        "messages.0.sneaky",
    ),
    "engine_request_id": ("/v1/chat/completions", chat_body(request_id="gateway-ready-probe"), 400, "request_id"),
    "chat_template": ("/v1/chat/completions", chat_body(chat_template="{{ 7*7 }}"), 400, "chat_template"),
}


@pytest.fixture
def clean_upstream(upstream: Upstream) -> Upstream:
    upstream.reset()
    return upstream


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_requests_rejected(case: str, gateway: Gateway, client: httpx.Client, clean_upstream: Upstream) -> None:
    route, body, status, param = CASES[case]
    r = client.post(route, json=body, headers=gateway.auth())
    err = assert_openai_error(r, status, param=param)
    assert err["type"] == "invalid_request_error"
    assert clean_upstream.state()["requests"] == 0


def test_invalid_json(gateway: Gateway, client: httpx.Client, clean_upstream: Upstream) -> None:
    r = client.post(
        "/v1/chat/completions", content=b"{nope", headers={**gateway.auth(), "content-type": "application/json"}
    )
    assert_openai_error(r, 400)
    assert clean_upstream.state()["requests"] == 0


def test_body_too_large(gateway: Gateway, client: httpx.Client, clean_upstream: Upstream) -> None:
    r = client.post("/v1/chat/completions", json=chat_body(content="z" * 30000), headers=gateway.auth())
    assert_openai_error(r, 413)

    def chunked() -> Any:  # no content-length: the cap holds while streaming the body in
        for _ in range(30):
            yield b"x" * 1000

    r = client.post("/v1/chat/completions", content=chunked(), headers=gateway.auth())
    assert_openai_error(r, 413)
    assert clean_upstream.state()["requests"] == 0


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("depth", [70, 254, 300, 1000])
def test_deep_nesting_is_a_400_naming_the_limit(
    depth: int, stream: bool, gateway: Gateway, client: httpx.Client, clean_upstream: Upstream
) -> None:
    # orjson parses 1024 levels but cannot encode more than 254: this was a 500 per request.
    nested = "[" * depth + "]" * depth
    raw = b'{"model":"ok","max_tokens":4,"stream":%s,"messages":[{"role":"user","content":"hi"}],' % (
        b"true" if stream else b"false"
    )
    raw += b'"response_format":{"type":"json_schema","x":%s}}' % nested.encode()
    r = client.post("/v1/chat/completions", content=raw, headers={**gateway.auth(), "content-type": "application/json"})
    err = assert_openai_error(r, 400)
    assert "64 levels" in err["message"]
    assert clean_upstream.state()["requests"] == 0


def test_braces_inside_strings_are_not_nesting(gateway: Gateway, client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json=chat_body(content="{[" * 400), headers=gateway.auth())
    assert r.status_code == 200, r.text
