"""Readiness: the upstream's /health answers AND a 1-token generation succeeded recently.

vLLM's /health only says the engine process lives; a server that cannot generate (stuck
engine, broken model) must not receive traffic, so a background task generates one token
every `ready_probe_interval` seconds. The same probe refreshes the served model list,
which the gateway uses to reject unknown models before they reach vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import orjson

from app.gateway.config import Settings
from app.gateway.metrics import READY
from app.gateway.upstream import TRANSPORT_ERRORS, Upstream

log = logging.getLogger(__name__)


def new_probe_id() -> str:
    return secrets.token_hex(8)


class Readiness:
    def __init__(self, settings: Settings, upstream: Upstream) -> None:
        self.settings = settings
        self.upstream = upstream
        self.models: list[dict[str, Any]] = []
        self.model_ids: frozenset[str] = frozenset()
        # max_model_len per model, as vLLM (and the simulator) report it in /v1/models.
        self.context_len: dict[str, int] = {}
        self.health_ok = False
        self.last_generation_ok = float("-inf")
        self.last_error = "no probe yet"
        self._models_fetched_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._models_lock = asyncio.Lock()

    def status(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self.last_generation_ok
        fresh = age <= self.settings.ready_max_age_seconds
        ready = self.health_ok and fresh
        READY.set(1 if ready else 0)
        info: dict[str, Any] = {
            "ready": ready,
            "upstream_health": self.health_ok,
            "last_generation_age_seconds": round(age, 3) if age != float("inf") else None,
        }
        if not ready:
            info["reason"] = self.last_error if not fresh or not self.health_ok else "unknown"
        return ready, info

    async def refresh_models(self, *, min_age: float = 1.0) -> None:
        """Fetch /v1/models unless fetched within `min_age` seconds (unknown-model lookups call this)."""
        async with self._models_lock:
            if time.monotonic() - self._models_fetched_at < min_age:
                return
            self._models_fetched_at = time.monotonic()
            try:
                status, content = await self.upstream.request(
                    "GET", "/v1/models", timeout_s=self.settings.ready_probe_timeout
                )
                if status != 200:
                    raise ValueError(f"HTTP {status}")
                data = orjson.loads(content).get("data", [])
                self.models = [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
                self.model_ids = frozenset(m["id"] for m in self.models)
                self.context_len = {
                    m["id"]: m["max_model_len"]
                    for m in self.models
                    if isinstance(m.get("max_model_len"), int) and m["max_model_len"] > 0
                }
            except (*TRANSPORT_ERRORS, ValueError, AttributeError) as exc:
                log.debug("model list refresh failed: %s", exc)

    async def probe_once(self) -> None:
        timeout = self.settings.ready_probe_timeout
        try:
            status, _ = await self.upstream.request("GET", "/health", timeout_s=timeout)
            self.health_ok = status == 200
        except TRANSPORT_ERRORS as exc:
            self.health_ok = False
            self.last_error = f"upstream /health failed: {type(exc).__name__}"
            self.status()
            return
        if not self.health_ok:
            self.last_error = f"upstream /health answered {status}"
            self.status()
            return
        try:
            await self.refresh_models(min_age=0)
            model = self.settings.ready_probe_model or next(iter(sorted(self.model_ids)), None)
            if model is None:
                self.last_error = "upstream serves no model"
                return
            gstatus, content = await self.upstream.request(
                "POST",
                "/v1/completions",
                json_body={"model": model, "prompt": "ping", "max_tokens": 1, "temperature": 0},
                # Unique per probe: vLLM rejects a request id that is still running.
                headers={"x-request-id": f"gateway-ready-probe-{new_probe_id()}"},
                timeout_s=timeout,
            )
            body = orjson.loads(content) if gstatus == 200 else None
            if isinstance(body, dict) and body.get("choices"):
                self.last_generation_ok = time.monotonic()
            else:
                self.last_error = f"1-token generation failed: HTTP {gstatus}"
        except (*TRANSPORT_ERRORS, ValueError) as exc:
            self.last_error = f"1-token generation failed: {type(exc).__name__}"
        finally:
            self.status()

    async def _loop(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self.settings.ready_probe_interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="readiness-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
