"""Steady client traffic for the rollback drill, sent to the gateway of the release being served."""

from __future__ import annotations

import threading
import time

import httpx


class Traffic(threading.Thread):
    """Steady chat completions through the gateway; counts statuses per second."""

    def __init__(self, url: str, token: str, model: str, rps: float) -> None:
        super().__init__(name="drill-traffic", daemon=True)
        # (gateway URL, token): the gateway of the release being served; the sync agent switches it.
        self.target = (url, token)
        self.model, self.period = model, 1.0 / rps
        self.stop_event = threading.Event()
        self.counts: dict[str, int] = {}
        self.last_error_at = 0.0

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
                if code.startswith("5") or code == "transport":
                    self.last_error_at = time.monotonic()
                self.stop_event.wait(max(0.0, self.period - (time.monotonic() - t0)))
