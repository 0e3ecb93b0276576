"""A gateway told to stop lets in-flight streams finish for GATEWAY_SHUTDOWN_GRACE_SECONDS (the chart
sets it to the longest stream a pod shutdown lets finish); with too short a grace the stream is cut."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import Gateway, Keys, Upstream, chat_body, gateway_env, start_gateway

pytestmark = pytest.mark.slow


def stream_after_sigterm(grace: str, tmp_path: Path, keys: Keys, rbac_file: Path, upstream: Upstream) -> list[str]:
    """Start a 2 s stream (slow-stream), SIGTERM the gateway after its first chunk; the lines it got."""
    env = gateway_env(
        keys, rbac_file, upstream.url, tmp_path / f"audit-{grace}.log", GATEWAY_SHUTDOWN_GRACE_SECONDS=grace
    )
    proc, url = start_gateway(f"gw-drain-{grace}", env, tmp_path, keys)
    lines: list[str] = []
    try:
        gw = Gateway(url, proc, tmp_path / f"audit-{grace}.log", keys, env)
        token = gw.mint()
        first = threading.Event()

        def stop_after_first_chunk() -> None:
            first.wait(10)
            os.kill(proc.pid, signal.SIGTERM)

        killer = threading.Thread(target=stop_after_first_chunk, daemon=True)
        killer.start()
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json=chat_body("slow-stream", stream=True),
            headers={"authorization": f"Bearer {token}"},
            timeout=15,
        ) as resp:
            assert resp.status_code == 200
            try:
                for line in resp.iter_lines():
                    if line:
                        lines.append(line)
                        first.set()
            except httpx.HTTPError:
                pass  # the connection was cut
        killer.join(5)
        deadline = time.monotonic() + 15
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not proc.alive(), "the gateway did not exit after SIGTERM"
    finally:
        proc.stop()
    return lines


def test_in_flight_stream_finishes_within_the_grace(
    tmp_path: Path, keys: Keys, rbac_file: Path, upstream: Upstream
) -> None:
    assert stream_after_sigterm("10", tmp_path, keys, rbac_file, upstream)[-1] == "data: [DONE]"


def test_a_shorter_grace_cuts_the_stream(tmp_path: Path, keys: Keys, rbac_file: Path, upstream: Upstream) -> None:
    assert "data: [DONE]" not in stream_after_sigterm("1", tmp_path, keys, rbac_file, upstream)
