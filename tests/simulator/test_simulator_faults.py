"""Fault injection and the admin API, in process: determinism under a seed, protection, validation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from simhelpers import CHAT, MODEL, parse_sse, with_client

from app.simulator.config import Faults, SimulatorConfig
from app.simulator.engine import Engine
from app.simulator.metrics import SimMetrics


def cfg(**kw: Any) -> SimulatorConfig:
    return SimulatorConfig(model=MODEL, **kw)


async def statuses(c: httpx.AsyncClient, count: int = 40) -> list[int]:
    return [(await c.post("/v1/chat/completions", json=CHAT)).status_code for _ in range(count)]


def test_error_rate_is_deterministic_under_a_seed() -> None:
    faults = Faults(error_rate=0.5, error_status=503)
    a = with_client(cfg(seed=11, faults=faults), statuses)
    assert a == with_client(cfg(seed=11, faults=faults), statuses)
    assert set(a) == {200, 503} and 8 <= a.count(503) <= 32
    assert a != with_client(cfg(seed=12, faults=faults), statuses)


def test_injected_error_body_has_vllm_shape() -> None:
    async def body(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post("/v1/completions", json={"prompt": "x"})

    r = with_client(cfg(faults=Faults(error_rate=1.0, error_status=500)), body)
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "InternalServerError" and r.json()["error"]["code"] == 500


def test_admin_put_get_and_reset_replays_the_sequence() -> None:
    async def body(c: httpx.AsyncClient) -> None:
        assert (await c.get("/admin/faults")).json()["error_rate"] == 0.0
        r = await c.put("/admin/faults", json={"error_rate": 0.5, "error_status": 502})
        assert r.status_code == 200 and r.json()["error_status"] == 502
        first = await statuses(c, 20)
        assert 502 in first and (await c.get("/admin/faults")).json()["requests_seen"] == 20
        # reset clears every fault and replays the fault RNG from the seed.
        r = await c.put("/admin/faults", json={"reset": True})
        assert r.json()["error_rate"] == 0.0 and r.json()["requests_seen"] == 0
        assert set(await statuses(c, 5)) == {200}
        await c.put("/admin/faults", json={"reset": True, "error_rate": 0.5, "error_status": 502})
        assert await statuses(c, 20) == first

    with_client(cfg(seed=3), body)


def test_admin_rejects_invalid_settings() -> None:
    async def body(c: httpx.AsyncClient) -> None:
        for bad in ({"error_rate": 2}, {"error_status": 200}, {"unknown": 1}, {"stream_cutoff_mode": "x"}):
            r = await c.put("/admin/faults", json=bad)
            assert r.status_code == 400, bad
            assert r.json()["error"]["type"] == "BadRequestError"
        assert (await c.get("/admin/faults")).json()["error_rate"] == 0.0

    with_client(cfg(), body)


def test_admin_is_protected_by_token() -> None:
    async def body(c: httpx.AsyncClient) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            assert (await c.get("/admin/faults", headers=headers)).status_code == 401
            assert (await c.put("/admin/faults", json={"error_rate": 1}, headers=headers)).status_code == 401
            assert (await c.post("/admin/crash", headers=headers)).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert (await c.get("/admin/faults", headers=ok)).status_code == 200
        assert (await c.put("/admin/faults", json={"added_latency_ms": 1}, headers=ok)).status_code == 200
        # Inference endpoints are not behind the admin token.
        assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200

    with_client(cfg(admin_token="s3cret"), body)


def test_added_latency() -> None:
    async def body(c: httpx.AsyncClient) -> float:
        t0 = time.perf_counter()
        await c.post("/v1/chat/completions", json=CHAT)
        return time.perf_counter() - t0

    assert with_client(cfg(faults=Faults(added_latency_ms=300)), body) >= 0.29


def test_stream_cutoff_error_mode_sends_error_event_then_done() -> None:
    async def body(c: httpx.AsyncClient) -> list[Any]:
        r = await c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        return parse_sse(r.content)

    events = with_client(cfg(faults=Faults(stream_cutoff_tokens=3, stream_cutoff_mode="error")), body)
    content = [e for e in events[:-2] if e["choices"] and "content" in e["choices"][0]["delta"]]
    assert len(content) == 4  # the role chunk + 3 tokens
    assert events[-2]["error"]["code"] == 500 and events[-1] == "[DONE]"


def test_stream_cutoff_rate_applies_to_a_seeded_fraction() -> None:
    async def body(c: httpx.AsyncClient) -> list[bool]:
        out = []
        for _ in range(30):
            events = parse_sse(
                (await c.post("/v1/completions", json={"prompt": "x", "max_tokens": 4, "stream": True})).content
            )
            out.append(any(isinstance(e, dict) and "error" in e for e in events))
        return out

    faults = Faults(stream_cutoff_tokens=1, stream_cutoff_rate=0.5, stream_cutoff_mode="error")
    cut = with_client(cfg(seed=5, faults=faults), body)
    assert 5 <= sum(cut) <= 25
    assert cut == with_client(cfg(seed=5, faults=faults), body)


def test_load_multiplier_grows_with_running_sequences() -> None:
    engine = Engine(cfg(max_num_seqs=4, load_factor=2.0), SimMetrics(MODEL, 128))
    engine.running = 1
    assert engine.load_multiplier() == 1.0
    engine.running = 4
    assert engine.load_multiplier() == 2.5


def test_kv_cache_usage_follows_tokens_in_flight() -> None:
    async def body() -> None:
        metrics = SimMetrics(MODEL, 128)
        engine = Engine(cfg(max_num_seqs=2, kv_cache_tokens=100), metrics)
        async with engine.admitted(prompt_tokens=30, arrival=time.perf_counter()) as seq:
            engine.add_generated(seq, 20)
            assert (
                metrics.registry.get_sample_value("vllm:kv_cache_usage_perc", {"model_name": MODEL, "engine": "0"})
                == 0.5
            )
        assert engine.kv_tokens == 0

    asyncio.run(body())
