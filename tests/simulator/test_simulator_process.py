"""The simulator as a real process over loopback HTTP: timing, queueing, hang, crash, dropped streams.

Timing tolerances are wide on purpose: the CI box has 2 cores shared with other suites.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson
import pytest
from simhelpers import parse_sse, value

from app.simulator.server import CRASH_EXIT_CODE

pytestmark = pytest.mark.slow

MODEL = "sim-test"
LABELS = {"model_name": MODEL, "engine": "0"}


def chat(max_tokens: int, stream: bool = False) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def test_streamed_ttft_and_itl_match_configuration(start_sim: Any) -> None:
    with start_sim("--ttft-ms", "300", "--itl-ms", "60") as (base, _), httpx.Client(base_url=base, timeout=10) as c:
        t0 = time.perf_counter()
        token_times: list[float] = []
        raw = b""
        with c.stream("POST", "/v1/chat/completions", json=chat(10, stream=True)) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                raw += line.encode() + b"\n"
                if line.startswith("data: {") and orjson.loads(line[6:])["choices"][0]["delta"].get("content"):
                    token_times.append(time.perf_counter())
        assert parse_sse(raw)[-1] == "[DONE]"
        assert len(token_times) == 10
        ttft = token_times[0] - t0
        itl = (token_times[-1] - token_times[0]) / 9
        assert 0.25 <= ttft <= 0.9, ttft
        assert 0.045 <= itl <= 0.2, itl
        metrics = c.get("/metrics").text
        server_ttft = value(metrics, "vllm:time_to_first_token_seconds_sum", **LABELS)
        server_itl = value(metrics, "vllm:inter_token_latency_seconds_sum", **LABELS) / 9
        assert 0.28 <= server_ttft <= 0.9 and 0.05 <= server_itl <= 0.2


def test_requests_queue_beyond_max_num_seqs(start_sim: Any) -> None:
    with start_sim("--max-num-seqs", "2", "--itl-ms", "40", "--load-factor", "0") as (base, _):

        async def load() -> tuple[list[float], str]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:

                async def one() -> float:
                    t0 = time.perf_counter()
                    r = await c.post("/v1/chat/completions", json=chat(20))
                    assert r.status_code == 200
                    return time.perf_counter() - t0

                tasks = [asyncio.create_task(one()) for _ in range(6)]
                await asyncio.sleep(0.4)
                during = (await c.get("/metrics")).text
                return list(await asyncio.gather(*tasks)), during

        durations, during = asyncio.run(load())
        assert value(during, "vllm:num_requests_running", **LABELS) == 2
        assert value(during, "vllm:num_requests_waiting", **LABELS) >= 2
        assert value(during, "vllm:kv_cache_usage_perc", **LABELS) > 0
        # 6 requests of ~0.8 s through 2 slots: the last ones waited about two turns.
        durations.sort()
        assert durations[-1] >= 2 * durations[0]
        after = httpx.get(f"{base}/metrics").text
        assert value(after, "vllm:num_requests_waiting", **LABELS) == 0
        assert value(after, "vllm:request_queue_time_seconds_sum", **LABELS) > 1.0
        assert value(after, "vllm:request_success_total", finished_reason="length", **LABELS) == 6


def test_latency_grows_with_load(start_sim: Any) -> None:
    with start_sim("--max-num-seqs", "8", "--ttft-ms", "200", "--load-factor", "4") as (base, _):

        async def ttfts(concurrency: int) -> list[float]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as c:

                async def one() -> float:
                    t0 = time.perf_counter()
                    await c.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
                    return time.perf_counter() - t0

                return list(await asyncio.gather(*(one() for _ in range(concurrency))))

        alone = asyncio.run(ttfts(1))[0]
        loaded = max(asyncio.run(ttfts(8)))
        # 8 running of 8 with factor 4: up to 1 + 4 * 7/8 = 4.5x the lone TTFT.
        assert loaded >= 2 * alone, (alone, loaded)


def test_hang_then_runtime_reset(start_sim: Any) -> None:
    with start_sim("--hang-rate", "1") as (base, proc), httpx.Client(base_url=base) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post("/v1/chat/completions", json=chat(2), timeout=1.0)
        assert c.get("/health").status_code == 200 and proc.alive()
        assert c.put("/admin/faults", json={"reset": True}).status_code == 200
        assert c.post("/v1/chat/completions", json=chat(2), timeout=5).status_code == 200


def test_stream_drop_mode_cuts_the_connection(start_sim: Any) -> None:
    with start_sim("--stream-cutoff-tokens", "3") as (base, proc):
        raw = b""
        with httpx.Client(base_url=base, timeout=5) as c:
            with (
                pytest.raises(httpx.RemoteProtocolError),
                c.stream("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 10, "stream": True}) as r,
            ):
                for chunk in r.iter_bytes():
                    raw += chunk
            assert b"[DONE]" not in raw
            assert len(parse_sse(raw)) == 3
            assert c.get("/health").status_code == 200 and proc.alive()
            # Non-streaming requests are not affected by the stream cutoff.
            assert c.post("/v1/completions", json={"prompt": "x", "max_tokens": 10}).status_code == 200


def test_admin_crash_exits_the_process(start_sim: Any) -> None:
    with start_sim(env={"SIM_ADMIN_TOKEN": "tok"}) as (base, proc):
        assert httpx.post(f"{base}/admin/crash").status_code == 401
        assert proc.alive()
        r = httpx.post(f"{base}/admin/crash", headers={"Authorization": "Bearer tok"})
        assert r.status_code == 202
        assert proc.proc is not None
        assert proc.proc.wait(timeout=10) == CRASH_EXIT_CODE


def test_crash_after_requests(start_sim: Any) -> None:
    with start_sim("--crash-after-requests", "2") as (base, proc):
        with httpx.Client(base_url=base, timeout=5) as c:
            for _ in range(2):
                assert c.post("/v1/chat/completions", json=chat(2)).status_code == 200
            with pytest.raises(httpx.TransportError):
                c.post("/v1/chat/completions", json=chat(2))
        assert proc.proc is not None
        assert proc.proc.wait(timeout=10) == CRASH_EXIT_CODE
        assert "simulated crash" in proc.log_tail()


def test_cli_rejects_bad_flags(repo_root: Any) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "app.simulator", "--error-rate", "3"],
        cwd=repo_root,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2 and b"error_rate" in r.stderr


def test_metrics_scrape_has_no_created_series(start_sim: Any) -> None:
    with start_sim() as (base, _):
        text = httpx.get(f"{base}/metrics").text
        assert "vllm:num_requests_running" in text and "_created" not in text
        assert orjson.loads(httpx.get(f"{base}/version").content)["version"]


def test_client_disconnect_frees_the_slot_and_counts_abort(start_sim: Any) -> None:
    with start_sim("--itl-ms", "100", "--max-num-seqs", "1") as (base, _), httpx.Client(base_url=base, timeout=10) as c:
        with c.stream("POST", "/v1/completions", json={"prompt": "x", "max_tokens": 50, "stream": True}) as r:
            assert next(r.iter_lines()).startswith("data: {")
        # The stream was closed after one token; the slot must be free again promptly.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            metrics = c.get("/metrics").text
            if value(metrics, "vllm:request_success_total", finished_reason="abort", **LABELS) == 1:
                break
            time.sleep(0.1)
        assert value(metrics, "vllm:request_success_total", finished_reason="abort", **LABELS) == 1
        assert value(metrics, "vllm:num_requests_running", **LABELS) == 0
        assert c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
