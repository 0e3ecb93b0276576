"""OpenAI-compatible proxying: unary, streaming chunk by chunk, the OpenAI SDK, RBAC on models."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from .conftest import Gateway, Upstream, assert_openai_error, chat_body


def test_chat_unary(gateway: Gateway, client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json=chat_body(), headers=gateway.auth())
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "a b c"
    assert r.headers["x-ratelimit-limit-requests"] == "100000"
    assert r.headers["x-request-id"]


def test_completions_unary(gateway: Gateway, client: httpx.Client) -> None:
    r = client.post("/v1/completions", json={"model": "ok", "prompt": "hi", "max_tokens": 4}, headers=gateway.auth())
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "a b c"


@pytest.mark.parametrize("stream", [False, True])
def test_client_request_id_is_kept_but_vllm_gets_a_unique_one(
    stream: bool, gateway: Gateway, client: httpx.Client, upstream: Upstream
) -> None:
    # vLLM uses X-Request-ID as its engine request id and rejects duplicates of a running one:
    # a client reusing an id (or sending the probe's) must not reach vLLM with it.
    seen = set()
    for _ in range(2):
        r = client.post(
            "/v1/chat/completions",
            json=chat_body(stream=stream),
            headers={**gateway.auth(), "x-request-id": "gateway-ready-probe"},
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == "gateway-ready-probe"
        sent = upstream.state()["last_request_id"]
        assert sent and sent != "gateway-ready-probe"
        seen.add(sent)
    assert len(seen) == 2
    recs = [a for a in gateway.audit() if a["request_id"] == "gateway-ready-probe"]
    assert {a["upstream_request_id"] for a in recs[-2:]} == seen


def test_missing_max_tokens_gets_role_cap(gateway: Gateway, client: httpx.Client, upstream: Upstream) -> None:
    body = chat_body()
    del body["max_tokens"]
    assert client.post("/v1/chat/completions", json=body, headers=gateway.auth()).status_code == 200
    assert upstream.state()["bodies"][-1]["max_tokens"] == 256


def test_stream_forwards_chunks_as_they_arrive(gateway: Gateway) -> None:
    body = chat_body("slow-stream", stream=True)
    arrivals: list[float] = []
    lines: list[str] = []
    t0 = time.monotonic()
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth(), timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - t0)
                lines.append(line)
    assert lines[-1] == "data: [DONE]"
    # 10 chunks 0.2 s apart: the first must arrive long before the last (no buffering).
    assert arrivals[0] < 0.6 < arrivals[-1] - arrivals[0]
    # The client did not ask for usage: the gateway's own usage chunk is not forwarded.
    assert not any('"usage"' in ln for ln in lines)


def test_stream_usage_kept_when_asked(gateway: Gateway) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth()) as r:
        text = r.read().decode()
    assert '"usage"' in text and text.rstrip().endswith("data: [DONE]")


def test_openai_sdk_works(gateway: Gateway) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.mint(roles=("user",)), max_retries=0)
    out = sdk.chat.completions.create(model="ok", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert out.choices[0].message.content == "a b c"
    assert out.usage is not None and out.usage.completion_tokens == 3
    pieces = [
        c.choices[0].delta.content or ""
        for c in sdk.chat.completions.create(
            model="ok", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
        )
        if c.choices
    ]
    assert "".join(pieces) == "a b c"
    comp = sdk.completions.create(model="ok", prompt="hi", max_tokens=3)
    assert comp.choices[0].text == "a b c"
    assert sorted(m.id for m in sdk.models.list()) == ["ok", "slow-stream"]
    with pytest.raises(openai.PermissionDeniedError):
        sdk.chat.completions.create(model="err500", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="nope", max_retries=0).models.list()


def test_models_filtered_by_role(gateway: Gateway, client: httpx.Client) -> None:
    ids = {m["id"] for m in client.get("/v1/models", headers=gateway.auth(roles=("limited",))).json()["data"]}
    assert ids == {"ok"}
    ids_admin = {m["id"] for m in client.get("/v1/models", headers=gateway.auth(roles=("admin",))).json()["data"]}
    assert {"ok", "hang", "err500"} <= ids_admin
    union = {m["id"] for m in client.get("/v1/models", headers=gateway.auth(roles=("limited", "user"))).json()["data"]}
    assert union == {"ok", "slow-stream"}


def test_disallowed_model_403_never_reaches_upstream(
    gateway: Gateway, client: httpx.Client, upstream: Upstream
) -> None:
    upstream.reset()
    r = client.post("/v1/chat/completions", json=chat_body("err500"), headers=gateway.auth(roles=("user",)))
    err = assert_openai_error(r, 403, param="model")
    assert err["type"] == "permission_error"
    assert upstream.state()["requests"] == 0


def test_unknown_model_404_names_it(gateway: Gateway, client: httpx.Client, upstream: Upstream) -> None:
    upstream.reset()
    r = client.post("/v1/chat/completions", json=chat_body("no-such-model"), headers=gateway.auth(roles=("admin",)))
    err = assert_openai_error(r, 404, param="model")
    assert "no-such-model" in err["message"]
    assert upstream.state()["requests"] == 0


def test_unknown_route_is_openai_shaped(client: httpx.Client) -> None:
    assert_openai_error(client.get("/v1/nothing"), 404)


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_disallowed_model_is_403_whether_or_not_it_exists(
    route: str, gateway: Gateway, client: httpx.Client, upstream: Upstream
) -> None:
    # RBAC runs before the served-model check: 403 vs 404 must not tell a restricted caller
    # which models are served.
    upstream.reset()
    errors = []
    for model in ("err500", "no-such-model-xyz"):  # served / not served, neither allowed to "user"
        body: dict[str, object] = (
            chat_body(model)
            if route.endswith("chat/completions")
            else {"model": model, "prompt": "hi", "max_tokens": 4}
        )
        r = client.post(route, json=body, headers=gateway.auth(roles=("user",)))
        err = assert_openai_error(r, 403, param="model")
        errors.append({**err, "message": err["message"].replace(model, "M")})
    assert errors[0] == errors[1] and errors[0]["code"] == "model_not_allowed"
    assert upstream.state()["requests"] == 0
    # A caller allowed everything ("*") still learns that a model is not served.
    r = client.post(
        route,
        json=chat_body("no-such-model-xyz")
        if route.endswith("chat/completions")
        else {"model": "no-such-model-xyz", "prompt": "hi", "max_tokens": 4},
        headers=gateway.auth(roles=("admin",)),
    )
    assert_openai_error(r, 404, param="model")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/v1/chat/completions", {"POST"}), ("PUT", "/v1/completions", {"POST"}), ("POST", "/v1/models", {"GET"})],
)
def test_405_names_the_allowed_methods(method: str, path: str, allowed: set[str], client: httpx.Client) -> None:
    r = client.request(method, path)
    assert_openai_error(r, 405)
    assert allowed <= {m.strip() for m in r.headers["allow"].split(",")}
