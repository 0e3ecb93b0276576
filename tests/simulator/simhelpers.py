"""Helpers shared by the simulator suites: an in-process client, SSE and /metrics parsing (a plain module)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from app.simulator.config import SimulatorConfig
from app.simulator.server import create_app


def parse_sse(raw: bytes) -> list[Any]:
    """Every event of an SSE body, decoded; `[DONE]` stays a string. Fails on any malformed event."""
    assert raw.endswith(b"\n\n"), f"SSE body must end with a blank line: {raw[-80:]!r}"
    events: list[Any] = []
    for block in raw.split(b"\n\n")[:-1]:
        assert block.startswith(b"data: "), f"not an SSE data event: {block!r}"
        payload = block[len(b"data: ") :]
        events.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return events


def samples(metrics_text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} for one /metrics scrape."""
    out = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample; labels given must match, others are ignored (sums if several match)."""
    total, found = 0.0, False
    for (sname, slabels), v in samples(metrics_text).items():
        if sname == name and all(dict(slabels).get(k) == want for k, want in labels.items()):
            total += v
            found = True
    assert found, f"metric sample {name}{labels} not exposed"
    return total


T = TypeVar("T")
MODEL = "sim-test"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 8}


def with_client(config: SimulatorConfig, body: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run `body` against a fresh in-process simulator (one event loop per test)."""

    async def _run() -> T:
        transport = httpx.ASGITransport(app=create_app(config))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            return await body(client)

    return asyncio.run(_run())
