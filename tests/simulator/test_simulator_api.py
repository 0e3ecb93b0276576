"""The simulator's OpenAI/vLLM surface, in process (httpx ASGITransport): shapes, validation, determinism."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from simhelpers import CHAT, MODEL, parse_sse, value, with_client

from app.simulator.config import SimulatorConfig
from app.simulator.engine import WORDS, estimate_tokens


def cfg(**kw: Any) -> SimulatorConfig:
    return SimulatorConfig(model=MODEL, **kw)


def test_health_version_models() -> None:
    async def body(c: httpx.AsyncClient) -> None:
        r = await c.get("/health")
        assert r.status_code == 200 and r.content == b""
        assert (await c.get("/version")).json()["version"]
        models = (await c.get("/v1/models")).json()
        assert models["object"] == "list"
        (card,) = models["data"]
        assert card["id"] == MODEL and card["root"] == MODEL
        assert card["object"] == "model" and card["owned_by"] == "vllm"
        assert card["max_model_len"] == 512 and isinstance(card["created"], int)

    with_client(cfg(max_model_len=512), body)


def test_chat_completion_shape_and_usage() -> None:
    async def body(c: httpx.AsyncClient) -> None:
        r = await c.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["id"].startswith("chatcmpl-") and data["object"] == "chat.completion" and data["model"] == MODEL
        (choice,) = data["choices"]
        assert choice["index"] == 0 and choice["finish_reason"] == "length"
        assert choice["message"]["role"] == "assistant"
        words = choice["message"]["content"].split(" ")
        assert len(words) == 8 and set(words) <= set(WORDS)
        # Documented estimate: ceil(len("role:content") / 4) + 3 per message, + 3 for the assistant header.
        expected_prompt = estimate_tokens("user:Say something.") + 3 + 3
        assert data["usage"] == {
            "prompt_tokens": expected_prompt,
            "completion_tokens": 8,
            "total_tokens": expected_prompt + 8,
        }

    with_client(cfg(), body)


def test_completions_string_and_token_prompts() -> None:
    async def body(c: httpx.AsyncClient) -> None:
        r = await c.post("/v1/completions", json={"model": MODEL, "prompt": "abcdefgh", "max_tokens": 3})
        data = r.json()
        assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
        assert data["usage"]["prompt_tokens"] == 2 and data["usage"]["completion_tokens"] == 3
        assert len(data["choices"][0]["text"].split(" ")) == 3
        r = await c.post("/v1/completions", json={"prompt": [1, 2, 3, 4, 5], "max_tokens": 2})
        assert r.json()["usage"]["prompt_tokens"] == 5  # model is optional, as in vLLM

    with_client(cfg(), body)


def test_chat_stream_every_chunk_matches_vllm_format() -> None:
    async def body(c: httpx.AsyncClient) -> tuple[list[Any], str]:
        full = (await c.post("/v1/chat/completions", json=CHAT)).json()["choices"][0]["message"]["content"]
        req = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        r = await c.post("/v1/chat/completions", json=req)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return parse_sse(r.content), full

    events, full = with_client(cfg(), body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({e["id"] for e in chunks}) == 1
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == MODEL for e in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 8
    content = chunks[1:-1]
    assert len(content) == 8  # one chunk per token
    assert [e["choices"][0]["finish_reason"] for e in content] == [None] * 7 + ["length"]
    assert "".join(e["choices"][0]["delta"]["content"] for e in content) == full
    assert all("usage" not in e for e in chunks[:-1])


def test_stream_without_usage_and_completions_stream() -> None:
    async def body(c: httpx.AsyncClient) -> tuple[list[Any], list[Any]]:
        a = await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        b = await c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 4, "stream": True})
        return parse_sse(a.content), parse_sse(b.content)

    chat, comp = with_client(cfg(), body)
    assert chat[-1] == "[DONE]" and all(e["choices"] for e in chat[:-1])
    assert comp[-1] == "[DONE]" and len(comp) == 5
    assert all(e["object"] == "text_completion" and "text" in e["choices"][0] for e in comp[:-1])
    assert comp[-2]["choices"][0]["finish_reason"] == "length"


def test_output_is_deterministic_per_seed_and_prompt() -> None:
    async def texts(c: httpx.AsyncClient) -> list[str]:
        out = []
        for req in (CHAT, {**CHAT, "max_tokens": 12}, {**CHAT, "messages": [{"role": "user", "content": "other"}]}):
            out.append((await c.post("/v1/chat/completions", json=req)).json()["choices"][0]["message"]["content"])
        out.append(
            (await c.post("/v1/chat/completions", json={**CHAT, "seed": 7})).json()["choices"][0]["message"]["content"]
        )
        return out

    a = with_client(cfg(seed=1), texts)
    assert a == with_client(cfg(seed=1), texts)  # same seed, same requests -> same text
    assert a[1].startswith(a[0])  # a longer max_tokens extends the same text
    assert a[2] != a[0] and a[3] != a[0]  # prompt and request seed change it
    assert with_client(cfg(seed=2), texts)[0] != a[0]


def test_stop_strings_eos_rule_and_n() -> None:
    async def body(c: httpx.AsyncClient) -> None:
        base = (await c.post("/v1/completions", json={"prompt": "p", "max_tokens": 10})).json()["choices"][0]["text"]
        stop_word = base.split(" ")[3]
        r = (await c.post("/v1/completions", json={"prompt": "p", "max_tokens": 10, "stop": [stop_word]})).json()
        assert r["choices"][0]["finish_reason"] == "stop"
        assert stop_word not in r["choices"][0]["text"].split(" ")
        r = (await c.post("/v1/chat/completions", json={**CHAT, "n": 3})).json()
        assert [ch["index"] for ch in r["choices"]] == [0, 1, 2] and r["usage"]["completion_tokens"] == 24

    with_client(cfg(), body)

    async def eos(c: httpx.AsyncClient) -> None:
        r = (await c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 200})).json()
        assert r["choices"][0]["finish_reason"] == "stop"
        assert 1 <= r["usage"]["completion_tokens"] < 200

    with_client(cfg(eos_rate=0.2), eos)


@pytest.mark.parametrize(
    ("path", "payload", "status", "param"),
    [
        ("/v1/chat/completions", {**CHAT, "max_tokens": 120}, 400, "max_tokens"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/chat/completions", {**CHAT, "model": "nope"}, 404, "model"),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
        ("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}, 400, "stream_options"),
        ("/v1/completions", {"prompt": {"x": 1}}, 400, "prompt"),
        ("/v1/completions", {"prompt": "x", "n": 1000}, 400, "n"),
        ("/v1/completions", {"prompt": "x" * 600}, 400, "max_tokens"),
    ],
)
def test_validation_errors_have_vllm_shape(path: str, payload: dict[str, Any], status: int, param: str) -> None:
    async def body(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post(path, json=payload)

    r = with_client(cfg(max_model_len=128), body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["param"] == param and err["message"] and err["type"].endswith("Error")


def test_invalid_json_is_400() -> None:
    async def body(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post("/v1/completions", content=b"{not json")

    r = with_client(cfg(), body)
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequestError"


# vLLM's own names and types (V1 engine); a rename here breaks dashboards and alerts.
EXPECTED_METRICS = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
}


def test_metrics_names_types_labels_and_movement() -> None:
    async def body(c: httpx.AsyncClient) -> tuple[str, str]:
        before = (await c.get("/metrics")).text
        await c.post("/v1/chat/completions", json=CHAT)
        await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        return before, (await c.get("/metrics")).text

    before, after = with_client(cfg(), body)
    families = {f.name: f for f in text_string_to_metric_families(after)}
    for name, kind in EXPECTED_METRICS.items():
        assert name in families, f"{name} missing"
        assert families[name].type == kind, f"{name} is {families[name].type}, vLLM has {kind}"
        for s in families[name].samples:
            assert s.labels["model_name"] == MODEL and s.labels["engine"] == "0"
    labels = {"model_name": MODEL, "engine": "0"}
    assert value(after, "vllm:request_success_total", finished_reason="length", **labels) == 2
    assert value(after, "vllm:generation_tokens_total", **labels) == 16
    assert value(after, "vllm:prompt_tokens_total", **labels) > value(before, "vllm:prompt_tokens_total", **labels)
    assert value(after, "vllm:time_to_first_token_seconds_count", **labels) == 2
    assert value(after, "vllm:inter_token_latency_seconds_count", **labels) == 14
    assert value(after, "vllm:e2e_request_latency_seconds_count", **labels) == 2
    assert value(after, "vllm:request_queue_time_seconds_count", **labels) == 2
    assert value(after, "vllm:num_requests_running", **labels) == 0
    assert value(after, "vllm:kv_cache_usage_perc", **labels) == 0
