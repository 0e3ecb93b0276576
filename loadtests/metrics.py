"""Per-request LLM metrics: the SSE stream parser, the sample record, and percentiles.

Definitions follow vLLM's serving benchmark so numbers compare with `vllm bench serve`:
- TTFT: request sent -> first content token received.
- ITL: gaps between successive content chunks (pooled over all requests for percentiles).
- TPOT: (E2E - TTFT) / (output tokens - 1), per request.
- E2E: request sent -> stream finished.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Sample:
    """One measured request. Times in ms; `start` is wall-clock seconds (epoch)."""

    start: float
    ok: bool
    e2e_ms: float
    ttft_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    status: int = 0
    error: str = ""

    @property
    def tpot_ms(self) -> float | None:
        if not self.ok or self.ttft_ms is None or self.output_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.output_tokens - 1)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / (self.e2e_ms / 1000.0) if self.ok and self.e2e_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        return cls(
            start=float(d["start"]),
            ok=bool(d["ok"]),
            e2e_ms=float(d["e2e_ms"]),
            ttft_ms=None if d.get("ttft_ms") is None else float(d["ttft_ms"]),
            itl_ms=[float(x) for x in d.get("itl_ms", [])],
            output_tokens=int(d.get("output_tokens", 0)),
            prompt_tokens=int(d.get("prompt_tokens", 0)),
            status=int(d.get("status", 0)),
            error=str(d.get("error", "")),
        )


class StreamError(Exception):
    """The HTTP status was fine but the SSE body was not a valid chat-completion stream."""


@dataclass
class StreamParser:
    """Feed SSE lines with their arrival time (ms since the request was sent); validates as it goes.

    A valid stream: every `data:` payload is JSON with `choices` (or a final usage chunk),
    at least one content token, a `finish_reason`, and a closing `data: [DONE]`.
    """

    ttft_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    content_chunks: int = 0
    usage_completion_tokens: int | None = None
    usage_prompt_tokens: int | None = None
    finish_reason: str | None = None
    done: bool = False
    _last_token_ms: float | None = None

    def feed(self, raw_line: str, at_ms: float) -> None:
        line = raw_line.strip()
        # SSE comments (":") and blank separators carry no data; "event:"/"id:" are unused by OpenAI.
        if not line or line.startswith(":") or not line.startswith("data:"):
            return
        payload = line[5:].strip()
        if self.done:
            raise StreamError("data after [DONE]")
        if payload == "[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise StreamError(f"chunk is not JSON: {payload[:80]!r}") from exc
        if not isinstance(obj, dict):
            raise StreamError("chunk is not a JSON object")
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise StreamError(f"error event in stream: {str(msg)[:120]}")
        usage = obj.get("usage")
        if isinstance(usage, dict):
            if usage.get("completion_tokens") is not None:
                self.usage_completion_tokens = int(usage["completion_tokens"])
            if usage.get("prompt_tokens") is not None:
                self.usage_prompt_tokens = int(usage["prompt_tokens"])
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise StreamError("chunk has no choices list")
        for choice in choices:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._token(at_ms)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])

    def _token(self, at_ms: float) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = at_ms
        elif self._last_token_ms is not None:
            self.itl_ms.append(at_ms - self._last_token_ms)
        self._last_token_ms = at_ms
        self.content_chunks += 1

    @property
    def output_tokens(self) -> int:
        # The server's usage count is exact (a chunk may carry several tokens); chunk count otherwise.
        return self.usage_completion_tokens if self.usage_completion_tokens is not None else self.content_chunks

    def finish(self) -> None:
        """Raise StreamError if the stream ended without being complete."""
        if self.content_chunks == 0:
            raise StreamError("stream ended without any content token")
        if self.finish_reason is None:
            raise StreamError("stream ended without finish_reason")
        if not self.done:
            raise StreamError("stream ended without data: [DONE]")


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; NaN for no data."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def read_samples(lines: Iterable[str]) -> list[Sample]:
    return [Sample.from_dict(json.loads(line)) for line in lines if line.strip()]
