"""The smoke checks: what a user's first requests expect from the model server and the gateway.

Health, models, chat, streaming, auth, validation and metrics, each a named Check; any
failure (assertion, HTTP, bad JSON) becomes a FAILED check with the reason. Used by the
`smoke` stage against a local stack or an already-running gateway.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from pipeline.core.result import Check, Status, Timer

CHECKS = ("health", "models", "chat", "stream", "auth", "validation", "metrics")

PROMPT = "Say hello to the gateway and the model server."

MAX_TOKENS = 16

# Gateway metric families the gateway must expose (any one proves its /metrics is wired).
GATEWAY_METRIC_PREFIX = "gateway_"

VLLM_METRIC_PREFIX = "vllm:"


class SmokeFailure(AssertionError):
    """A smoke check saw something wrong; the message is the check's detail."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise SmokeFailure(message)


def _check(name: str, fn: Callable[[], tuple[str, dict[str, float]]]) -> Check:
    """Run one check function; any failure (assertion, HTTP, bad JSON) becomes a FAILED check."""
    with Timer() as t:
        try:
            detail, numbers = fn()
            status = Status.PASSED
        except SmokeFailure as exc:
            detail, numbers, status = str(exc), {}, Status.FAILED
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as exc:
            detail, numbers, status = f"{type(exc).__name__}: {exc}", {}, Status.FAILED
    return Check(name=name, status=status, detail=detail, seconds=t.seconds, numbers=numbers)


def _body(r: httpx.Response) -> str:
    return r.text[:300].replace("\n", " ")


def _usage_numbers(usage: Any, max_tokens: int) -> dict[str, float]:
    """Validate an OpenAI `usage` object; return its numbers."""
    _require(isinstance(usage, dict), f"usage missing or not an object: {usage!r}")
    fields = ("prompt_tokens", "completion_tokens", "total_tokens")
    missing = [f for f in fields if not isinstance(usage.get(f), int)]
    _require(not missing, f"usage lacks integer {', '.join(missing)}: {usage}")
    p, c, t = (int(usage[f]) for f in fields)
    _require(p > 0, f"usage.prompt_tokens must be > 0: {usage}")
    _require(1 <= c <= max_tokens, f"usage.completion_tokens must be in 1..{max_tokens}: {usage}")
    _require(t == p + c, f"usage.total_tokens {t} != prompt_tokens {p} + completion_tokens {c}")
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": t}


def _chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        **extra,
    }


class Smoker:
    """The checks, against one upstream (model server) and one gateway."""

    def __init__(
        self,
        upstream_url: str,
        gateway_url: str,
        model: str,
        token: str,
        timeout: float = 60.0,
        client: httpx.Client | None = None,
        gateway_metrics_url: str | None = None,
    ) -> None:
        self.upstream = upstream_url.rstrip("/")
        self.gateway = gateway_url.rstrip("/")
        # The gateway serves /metrics on its internal port, not the API's.
        self.gateway_metrics = (gateway_metrics_url or gateway_url).rstrip("/")
        self.model = model
        self.auth = {"Authorization": f"Bearer {token}"}
        # Injectable so the response parsing is unit-tested against canned replies.
        self.client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def health(self) -> tuple[str, dict[str, float]]:
        t0 = time.perf_counter()
        r = self.client.get(f"{self.upstream}/health")
        _require(r.status_code == 200, f"model server /health: HTTP {r.status_code} {_body(r)}")
        return "model server /health 200", {"latency_ms": round((time.perf_counter() - t0) * 1000, 1)}

    def models(self) -> tuple[str, dict[str, float]]:
        r = self.client.get(f"{self.gateway}/v1/models", headers=self.auth)
        _require(r.status_code == 200, f"gateway /v1/models: HTTP {r.status_code} {_body(r)}")
        ids = [m.get("id") for m in r.json().get("data", [])]
        _require(self.model in ids, f"model {self.model!r} not listed by /v1/models (listed: {ids})")
        return f"/v1/models lists {self.model}", {"models": len(ids)}

    def chat(self) -> tuple[str, dict[str, float]]:
        t0 = time.perf_counter()
        r = self.client.post(f"{self.gateway}/v1/chat/completions", headers=self.auth, json=_chat_body(self.model))
        latency_ms = (time.perf_counter() - t0) * 1000
        _require(r.status_code == 200, f"chat completion: HTTP {r.status_code} {_body(r)}")
        data = r.json()
        _require(data.get("object") == "chat.completion", f"object is {data.get('object')!r}, not 'chat.completion'")
        _require(data.get("model") == self.model, f"response model {data.get('model')!r} != {self.model!r}")
        choice = data["choices"][0]
        content = choice["message"]["content"]
        _require(isinstance(content, str), f"choices[0].message.content is not a string: {content!r}")
        _require(bool(choice.get("finish_reason")), "choices[0].finish_reason missing")
        numbers = _usage_numbers(data.get("usage"), MAX_TOKENS)
        numbers["latency_ms"] = round(latency_ms, 1)
        return (
            f"{numbers['completion_tokens']:.0f} tokens in {latency_ms:.0f} ms, finish_reason={choice['finish_reason']}",
            numbers,
        )

    def stream(self) -> tuple[str, dict[str, float]]:
        body = _chat_body(self.model, stream=True, stream_options={"include_usage": True})
        t0 = time.perf_counter()
        ttft: float | None = None
        chunks = 0
        done = False
        usage: Any = None
        text: list[str] = []
        with self.client.stream("POST", f"{self.gateway}/v1/chat/completions", headers=self.auth, json=body) as r:
            if r.status_code != 200:
                r.read()
                raise SmokeFailure(f"streaming chat completion: HTTP {r.status_code} {_body(r)}")
            ctype = r.headers.get("content-type", "")
            _require(ctype.startswith("text/event-stream"), f"content-type is {ctype!r}, not text/event-stream")
            for line in r.iter_lines():
                if not line.strip():
                    continue
                _require(line.startswith("data:"), f"not an SSE data line: {line[:200]!r}")
                payload = line[len("data:") :].strip()
                _require(not done, f"data after [DONE]: {payload[:200]!r}")
                if payload == "[DONE]":
                    done = True
                    continue
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise SmokeFailure(f"chunk {chunks + 1} is not JSON: {payload[:200]!r}") from None
                _require("error" not in chunk, f"error event in stream: {payload[:300]}")
                _require(chunk.get("object") == "chat.completion.chunk", f"chunk object is {chunk.get('object')!r}")
                chunks += 1
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    text.append(piece)
                    # First generated token = first chunk carrying text or the finish reason
                    # (the role-only opening chunk carries neither).
                    if ttft is None and (piece or choice.get("finish_reason")):
                        ttft = (time.perf_counter() - t0) * 1000
                if chunk.get("usage"):
                    usage = chunk["usage"]
        total_ms = (time.perf_counter() - t0) * 1000
        _require(done, f"stream ended without data: [DONE] after {chunks} chunks")
        _require(ttft is not None, f"no chunk carried a token in {chunks} chunks")
        _require(usage is not None, "no usage chunk although stream_options.include_usage was set")
        numbers = _usage_numbers(usage, MAX_TOKENS)
        assert ttft is not None  # for mypy; checked above
        numbers.update({"ttft_ms": round(ttft, 1), "total_ms": round(total_ms, 1), "chunks": chunks})
        return f"{chunks} chunks, TTFT {ttft:.0f} ms, total {total_ms:.0f} ms, ends with [DONE]", numbers

    def unauthenticated(self) -> tuple[str, dict[str, float]]:
        r = self.client.post(f"{self.gateway}/v1/chat/completions", json=_chat_body(self.model))
        _require(r.status_code == 401, f"request without a token: HTTP {r.status_code}, expected 401 {_body(r)}")
        err = r.json().get("error")
        _require(isinstance(err, dict) and bool(err.get("message")), f"401 body is not an OpenAI error: {_body(r)}")
        r2 = self.client.post(
            f"{self.gateway}/v1/chat/completions",
            headers={"Authorization": "Bearer not-a-jwt"},
            json=_chat_body(self.model),
        )
        _require(r2.status_code == 401, f"request with a garbage token: HTTP {r2.status_code}, expected 401")
        return f"401 without a token and with a garbage one ({err['message']!r})", {}

    def invalid(self) -> tuple[str, dict[str, float]]:
        cases = {
            "max_tokens": _chat_body(self.model, max_tokens=-1),
            "messages": {"model": self.model, "max_tokens": MAX_TOKENS},
        }
        seen = []
        for field_name, body in cases.items():
            r = self.client.post(f"{self.gateway}/v1/chat/completions", headers=self.auth, json=body)
            _require(400 <= r.status_code < 500, f"invalid {field_name}: HTTP {r.status_code}, expected 4xx {_body(r)}")
            err = r.json().get("error")
            _require(isinstance(err, dict), f"invalid {field_name}: body is not an OpenAI error: {_body(r)}")
            named = field_name in str(err.get("message", "")) or field_name in str(err.get("param") or "")
            _require(named, f"invalid {field_name}: the error does not name the field: {_body(r)}")
            seen.append(f"{field_name} → {r.status_code}")
        return "; ".join(seen), {}

    def metrics(self) -> tuple[str, dict[str, float]]:
        r = self.client.get(f"{self.upstream}/metrics")
        _require(r.status_code == 200, f"model server /metrics: HTTP {r.status_code}")
        vllm = {ln.split("{")[0].split(" ")[0] for ln in r.text.splitlines() if ln.startswith(VLLM_METRIC_PREFIX)}
        _require(bool(vllm), f"model server /metrics has no {VLLM_METRIC_PREFIX}* samples")
        g = self.client.get(f"{self.gateway_metrics}/metrics")
        _require(g.status_code == 200, f"gateway /metrics: HTTP {g.status_code}")
        gw = {ln.split("{")[0].split(" ")[0] for ln in g.text.splitlines() if ln.startswith(GATEWAY_METRIC_PREFIX)}
        _require(bool(gw), f"gateway /metrics has no {GATEWAY_METRIC_PREFIX}* samples")
        return f"{len(vllm)} vllm: series, {len(gw)} gateway series", {
            "vllm_series": len(vllm),
            "gateway_series": len(gw),
        }

    def run_all(self) -> list[Check]:
        steps: list[tuple[str, Callable[[], tuple[str, dict[str, float]]]]] = [
            ("health", self.health),
            ("models", self.models),
            ("chat", self.chat),
            ("stream", self.stream),
            ("auth", self.unauthenticated),
            ("validation", self.invalid),
            # Last: the counters then reflect the requests above.
            ("metrics", self.metrics),
        ]
        return [_check(name, fn) for name, fn in steps]
