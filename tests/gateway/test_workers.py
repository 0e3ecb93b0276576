"""`python -m app.gateway --workers 2`: /metrics aggregates every worker (PROMETHEUS_MULTIPROC_DIR),
and the raw-ASGI generation routes record their metrics in multiprocess mode."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from .conftest import RELEASE, Gateway, Keys, Upstream, chat_body, gateway_env, start_gateway

CHAT = "/v1/chat/completions"


@pytest.fixture
def two_workers(tmp_path: Path, keys: Keys, rbac_file: Path, upstream: Upstream) -> Iterator[tuple[Gateway, Path]]:
    # PROMETHEUS_MULTIPROC_DIR unset: `python -m app.gateway` makes one with tempfile, here under TMPDIR.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    audit = tmp_path / "audit.log"
    env = gateway_env(keys, rbac_file, upstream.url, audit, TMPDIR=str(tmp))
    proc, url = start_gateway("gateway-2w", env, tmp_path, keys, workers=2)
    try:
        dirs = list(tmp.glob("gateway-metrics-*"))
        assert len(dirs) == 1, dirs
        yield Gateway(url, proc, audit, keys, env), dirs[0]
    finally:
        proc.stop()


def _per_worker_requests(metrics_dir: Path) -> dict[int, float]:
    """gateway_requests_total for the chat route, read from each worker's own counter file."""
    out: dict[int, float] = {}
    for f in metrics_dir.glob("counter_*.db"):
        pid = int(re.fullmatch(r"counter_(\d+)\.db", f.name).group(1))  # type: ignore[union-attr]
        total = 0.0
        for metric in MultiProcessCollector.merge([str(f)], accumulate=True):  # type: ignore[no-untyped-call]
            for s in metric.samples:
                if s.name == "gateway_requests_total" and s.labels.get("route") == CHAT:
                    total += s.value
        out[pid] = total
    return out


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # A new connection per scrape, so different scrapes can land on different workers.
    text = httpx.get(f"{url}/metrics", headers={"connection": "close"}, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.mark.slow
def test_metrics_aggregate_both_workers(two_workers: tuple[Gateway, Path]) -> None:
    g, metrics_dir = two_workers
    auth = {**g.auth(), "connection": "close"}
    sent = streams = 0

    def one(i: int) -> int:
        stream = i % 2 == 1
        r = httpx.post(f"{g.url}{CHAT}", json=chat_body(stream=stream), headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        return int(stream)

    # Fresh connections, concurrently, until both workers have served some.
    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(8) as pool:
        while True:
            streams += sum(pool.map(one, range(sent, sent + 24)))
            sent += 24
            per_worker = _per_worker_requests(metrics_dir)
            if sum(1 for v in per_worker.values() if v > 0) >= 2:
                break
            assert time.monotonic() < deadline, f"one worker served everything: {per_worker}"
    assert len(per_worker) == 2, per_worker  # one file per worker, nothing from the parent
    assert sum(per_worker.values()) == sent

    route = (("release", RELEASE), ("route", CHAT))
    requests_key = (
        "gateway_requests_total",
        (("cause", "none"), ("model", "ok"), ("release", RELEASE), ("route", CHAT), ("status", "200")),
    )
    # A stream's bookkeeping finishes as its relay closes, just after the client saw the end.
    deadline = time.monotonic() + 5
    while _scrape(g.internal_url).get(requests_key) != sent and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(6):
        m = _scrape(g.internal_url)
        # Whichever worker answers, it reports the sum of both.
        assert m[requests_key] == sent
        assert m[("gateway_request_duration_seconds_count", route)] == sent
        assert m[("gateway_time_to_first_token_seconds_count", (("model", "ok"),))] == streams
        assert m[("gateway_prompt_tokens_total", (("model", "ok"),))] == 7 * sent
        assert m[("gateway_completion_tokens_total", (("model", "ok"),))] == 3 * sent
        assert m[("gateway_in_flight_requests", ())] == 0
