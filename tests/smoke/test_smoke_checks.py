"""The smoke checks against canned replies: what passes, and that each defect fails the named check."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pipeline.core.result import Status
from pipeline.probes.smoke_checks import CHECKS, MAX_TOKENS, Smoker

MODEL = "tiny-llama"
USAGE = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def good_stream() -> list[str]:
    events = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "he"}),
        _chunk({"content": "llo"}, "length"),
        {"id": "c1", "object": "chat.completion.chunk", "model": MODEL, "choices": [], "usage": USAGE},
    ]
    return [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]


def _error(status: int, message: str, param: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "invalid_request_error", "param": param}})


class FakeStack:
    """An upstream (http://up) and a gateway (http://gw) that behave; tests break one thing each."""

    def __init__(self) -> None:
        self.stream_events: list[str] = good_stream()
        self.usage: dict[str, Any] = dict(USAGE)
        self.models = [MODEL]
        self.validate = True
        self.gateway_metrics = 'gateway_requests_total{route="/v1/chat/completions"} 3\n'

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host, path = request.url.host, request.url.path
        if host == "up":
            if path == "/health":
                return httpx.Response(200)
            if path == "/metrics":
                return httpx.Response(200, text='# HELP x\nvllm:num_requests_running{model_name="m"} 0\n')
            return httpx.Response(404)
        if path == "/metrics":
            return httpx.Response(200, text=self.gateway_metrics)
        if request.headers.get("authorization") != "Bearer tok":
            return _error(401, "missing or invalid bearer token")
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": m} for m in self.models]})
        body = json.loads(request.content)
        if self.validate and "messages" not in body:
            return _error(400, "messages: field required", "messages")
        if self.validate and body.get("max_tokens", 1) < 1:
            return _error(400, "max_tokens must be at least 1", "max_tokens")
        if body.get("stream"):
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content="".join(self.stream_events).encode()
            )
        return httpx.Response(
            200,
            json={
                "object": "chat.completion",
                "model": MODEL,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "length"}
                ],
                "usage": self.usage,
            },
        )


def run_checks(fake: FakeStack) -> dict[str, Any]:
    smoker = Smoker("http://up", "http://gw", MODEL, "tok", client=httpx.Client(transport=httpx.MockTransport(fake)))
    return {c.name: c for c in smoker.run_all()}


def test_every_check_passes_against_a_well_behaved_stack() -> None:
    checks = run_checks(FakeStack())
    assert list(checks) == list(CHECKS)
    assert all(c.status is Status.PASSED for c in checks.values()), {n: c.detail for n, c in checks.items()}
    assert checks["stream"].numbers["ttft_ms"] >= 0
    assert checks["stream"].numbers["completion_tokens"] == 4
    assert checks["chat"].numbers["total_tokens"] == 16


def _missing_done(f: FakeStack) -> None:
    f.stream_events = f.stream_events[:-1]


def _bad_json_chunk(f: FakeStack) -> None:
    f.stream_events.insert(1, "data: {not json\n\n")


def _no_usage_chunk(f: FakeStack) -> None:
    del f.stream_events[3]


def _inconsistent_usage(f: FakeStack) -> None:
    f.usage = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 99}


def _too_many_tokens(f: FakeStack) -> None:
    f.usage = {"prompt_tokens": 1, "completion_tokens": MAX_TOKENS + 1, "total_tokens": MAX_TOKENS + 2}


def _model_missing(f: FakeStack) -> None:
    f.models = ["other-model"]


def _no_validation(f: FakeStack) -> None:
    f.validate = False


def _no_gateway_metrics(f: FakeStack) -> None:
    f.gateway_metrics = "python_gc_objects_collected_total 1\n"


@pytest.mark.parametrize(
    ("breakage", "check", "needle"),
    [
        (_missing_done, "stream", "[DONE]"),
        (_bad_json_chunk, "stream", "not JSON"),
        (_no_usage_chunk, "stream", "include_usage"),
        (_inconsistent_usage, "chat", "total_tokens 99"),
        (_too_many_tokens, "chat", "completion_tokens"),
        (_model_missing, "models", "'tiny-llama' not listed"),
        (_no_validation, "validation", "expected 4xx"),
        (_no_gateway_metrics, "metrics", "gateway"),
    ],
)
def test_a_defect_fails_the_check_that_names_it(breakage: Callable[[FakeStack], None], check: str, needle: str) -> None:
    fake = FakeStack()
    breakage(fake)
    checks = run_checks(fake)
    assert checks[check].status is Status.FAILED
    assert needle in checks[check].detail
    others = [n for n, c in checks.items() if c.status is Status.FAILED and n != check]
    assert others == []
