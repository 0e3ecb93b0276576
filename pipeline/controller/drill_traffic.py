"""Steady client traffic for the rollback drill, sent to the gateway of the release being served."""

from __future__ import annotations

import itertools
import threading
import time

import httpx


class Traffic(threading.Thread):
    """Steady chat completions through the gateway; counts statuses, keeps when each answer came."""

    def __init__(self, url: str, token: str, model: str, rps: float) -> None:
        super().__init__(name="drill-traffic", daemon=True)
        # (gateway URL, token): the gateway of the release being served; the sync agent switches it.
        self.target = (url, token)
        self.model, self.period = model, 1.0 / rps
        self.stop_event = threading.Event()
        self.counts: dict[str, int] = {}
        self.last_error_at = 0.0
        self.answers: list[tuple[float, str]] = []  # (time.monotonic() when it finished, status or "transport")

    def run(self) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 4}
        with httpx.Client(timeout=5) as client:
            while not self.stop_event.is_set():
                t0 = time.monotonic()
                url, token = self.target
                try:
                    headers = {"Authorization": f"Bearer {token}"}
                    code = str(client.post(f"{url}/v1/chat/completions", json=body, headers=headers).status_code)
                except httpx.HTTPError:
                    code = "transport"
                self.counts[code] = self.counts.get(code, 0) + 1
                self.answers.append((time.monotonic(), code))
                if code.startswith("5") or code == "transport":
                    self.last_error_at = time.monotonic()
                self.stop_event.wait(max(0.0, self.period - (time.monotonic() - t0)))


def longest_gap(answers: list[tuple[float, str]], start: float, end: float) -> tuple[float, dict[str, int]]:
    """The longest time without a successful (200) answer around [start, end] (a pod replacement):
    from the last 200 before the interruption to the first 200 after it, and what came back in it."""
    ok = [t for t, code in answers if code == "200"]
    best, span = 0.0, (start, start)
    for prev, nxt in itertools.pairwise(ok):
        if nxt >= start and prev <= end and nxt - prev > best:
            best, span = nxt - prev, (prev, nxt)
    seen: dict[str, int] = {}
    for t, code in answers:
        if span[0] < t < span[1]:
            seen[code] = seen.get(code, 0) + 1
    return best, seen
