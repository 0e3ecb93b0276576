"""A unary request whose client leaves is aborted, as vLLM does (@with_cancellation): the batch
slot is freed at once and the request counts as vllm:request_success{finished_reason="abort"}.

Over a real process and a raw socket: the client sends the request, waits until it is running,
then closes the connection mid-generation.
"""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from simhelpers import value

pytestmark = pytest.mark.slow

MODEL = "sim-test"
LABELS = {"model_name": MODEL, "engine": "0"}


def _metric(base: str, name: str, **labels: str) -> float:
    return value(httpx.get(f"{base}/metrics", timeout=5).text, name, **{**LABELS, **labels})


def _wait(base: str, name: str, want: float, within: float, **labels: str) -> float:
    deadline = time.monotonic() + within
    seen = _metric(base, name, **labels)
    while seen != want and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = _metric(base, name, **labels)
    return seen


def test_a_unary_request_is_aborted_when_its_client_disconnects(start_sim: Any) -> None:
    # 400 tokens at 50 ms: 20 s of generation, far beyond the 3 s the abort may take.
    with start_sim("--itl-ms", "50", "--ttft-ms", "10", "--load-factor", "0") as (base, _):
        body = orjson.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400, "stream": False}
        )
        u = urlsplit(base)
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {u.netloc}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((u.hostname, u.port), timeout=5) as s:
            s.sendall(head + body)
            assert _wait(base, "vllm:num_requests_running", 1, within=5) == 1, "the request never started"
            t0 = time.monotonic()
        # The connection is closed: the request must be aborted well before its 20 s generation ends.
        assert _wait(base, "vllm:num_requests_running", 0, within=3) == 0, "the generation kept its batch slot"
        aborted = _wait(base, "vllm:request_success_total", 1, within=3, finished_reason="abort")
        assert aborted == 1, f"abort not counted (finished_reason=abort: {aborted})"
        assert time.monotonic() - t0 < 6
        assert _metric(base, "vllm:request_success_total", finished_reason="length") == 0
        # Only the tokens generated before the abort are counted.
        assert 0 < _metric(base, "vllm:generation_tokens_total") < 400
