"""Per-subject rate limits: requests per minute and tokens per minute, as token buckets.

A request takes 1 from the request bucket and its estimated tokens (prompt estimate +
requested output) from the token bucket; once the upstream reports usage the difference
is settled (`adjust`), so the bucket can go into debt when a reply was longer than asked.

Backends: in-process memory (one replica / one worker) or Redis (shared by all replicas;
one Lua script per decision, atomic). Redis outage policy: FAIL OPEN TO LOCAL LIMITS —
a failed call is retried once on a fresh connection (a restarted Redis answers it); if that
fails too, the gateway keeps enforcing the same limits per process with the memory backend
for `redis_retry_after_seconds`, then tries Redis again. The local buckets continue from the
last state each process saw in Redis (mirrored on every call), not from full buckets. Overload of the limiter never
becomes a 5xx, and a Redis outage never makes the service unlimited.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

log = logging.getLogger(__name__)

WINDOW = 60.0  # seconds: limits are "per minute"


@dataclass(slots=True)
class Decision:
    allowed: bool
    reason: str  # ok | requests | tokens | too_large
    backend: str  # memory | redis | fallback
    limit_requests: int
    remaining_requests: float
    limit_tokens: int
    remaining_tokens: float
    retry_after: float

    @property
    def label(self) -> str:
        """Short value for the audit log."""
        return "allow" if self.allowed else f"deny:{self.reason}"

    def header_pairs(self) -> list[tuple[bytes, bytes]]:
        """headers() as ASGI header pairs, formatted straight to bytes (hot path)."""
        rr = max(0.0, self.remaining_requests)
        rt = max(0.0, self.remaining_tokens)
        h = [
            (b"x-ratelimit-limit-requests", b"%d" % self.limit_requests),
            (b"x-ratelimit-remaining-requests", b"%d" % int(rr)),
            (b"x-ratelimit-reset-requests", b"%.3fs" % ((self.limit_requests - rr) * WINDOW / self.limit_requests)),
            (b"x-ratelimit-limit-tokens", b"%d" % self.limit_tokens),
            (b"x-ratelimit-remaining-tokens", b"%d" % int(rt)),
            (b"x-ratelimit-reset-tokens", b"%.3fs" % ((self.limit_tokens - rt) * WINDOW / self.limit_tokens)),
        ]
        if not self.allowed:
            h.append((b"retry-after", b"%d" % max(1, math.ceil(self.retry_after))))
        return h

    def headers(self) -> dict[str, str]:
        rr = max(0.0, self.remaining_requests)
        rt = max(0.0, self.remaining_tokens)
        h = {
            "x-ratelimit-limit-requests": str(self.limit_requests),
            "x-ratelimit-remaining-requests": str(int(rr)),
            "x-ratelimit-reset-requests": f"{(self.limit_requests - rr) * WINDOW / self.limit_requests:.3f}s",
            "x-ratelimit-limit-tokens": str(self.limit_tokens),
            "x-ratelimit-remaining-tokens": str(int(rt)),
            "x-ratelimit-reset-tokens": f"{(self.limit_tokens - rt) * WINDOW / self.limit_tokens:.3f}s",
        }
        if not self.allowed:
            h["retry-after"] = str(max(1, math.ceil(self.retry_after)))
        return h


def _decide(r: float, t: float, rcap: int, tcap: int, cost: int) -> tuple[int, float, float, float]:
    """Shared bucket arithmetic (mirrors the Lua script): allowed (1/0/-1), new r, new t, retry."""
    if cost > tcap:
        return -1, r, t, WINDOW
    if r >= 1 and t >= cost:
        return 1, r - 1, t - cost, 0.0
    wait_r = (1 - r) * WINDOW / rcap if r < 1 else 0.0
    wait_t = (cost - t) * WINDOW / tcap if t < cost else 0.0
    return 0, r, t, max(wait_r, wait_t)


def _decision(code: int, r: float, t: float, rcap: int, tcap: int, retry: float, backend: str) -> Decision:
    reason = "ok" if code == 1 else "too_large" if code == -1 else ("requests" if r < 1 else "tokens")
    return Decision(code == 1, reason, backend, rcap, r, tcap, t, retry)


class MemoryLimiter:
    """Buckets in a dict; safe without locks because no await happens inside a decision."""

    def __init__(self) -> None:
        self._b: dict[str, list[float]] = {}
        self._ops = 0

    def _refill(self, key: str, rcap: int, tcap: int, now: float) -> list[float]:
        b = self._b.get(key)
        if b is None:
            b = self._b[key] = [float(rcap), float(tcap), now]
            return b
        el = now - b[2]
        if el > 0:
            b[0] = min(rcap, b[0] + el * rcap / WINDOW)
            b[1] = min(tcap, b[1] + el * tcap / WINDOW)
            b[2] = now
        return b

    def take(self, key: str, rcap: int, tcap: int, cost: int, backend: str = "memory") -> Decision:
        now = time.monotonic()
        self._ops += 1
        if self._ops % 10000 == 0:
            self._prune(now)
        b = self._refill(key, rcap, tcap, now)
        code, b[0], b[1], retry = _decide(b[0], b[1], rcap, tcap, cost)
        return _decision(code, b[0], b[1], rcap, tcap, retry, backend)

    def mirror(self, key: str, r: float, t: float) -> None:
        """Record the shared (Redis) state of a bucket, so a fallback continues from it instead
        of from a full bucket (a Redis outage then does not hand each process a fresh limit)."""
        self._b[key] = [r, t, time.monotonic()]

    def adjust(self, key: str, rcap: int, tcap: int, delta: int) -> None:
        b = self._refill(key, rcap, tcap, time.monotonic())
        b[1] = min(tcap, b[1] - delta)

    def _prune(self, now: float) -> None:
        # A bucket idle for a full window is full again: forgetting it changes nothing.
        for k in [k for k, b in self._b.items() if now - b[2] > WINDOW]:
            del self._b[k]


LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rcap = tonumber(ARGV[1])
local tcap = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local r = tonumber(s[1]) or rcap
local tk = tonumber(s[2]) or tcap
local ts = tonumber(s[3]) or now
local el = now - ts
if el > 0 then
  r = math.min(rcap, r + el * rcap / 60)
  tk = math.min(tcap, tk + el * tcap / 60)
end
local code = 0
local retry = 0
if ARGV[4] == 'adjust' then
  tk = math.min(tcap, tk - cost)
  code = 1
elseif cost > tcap then
  code = -1
  retry = 60
elseif r >= 1 and tk >= cost then
  r = r - 1
  tk = tk - cost
  code = 1
else
  local wr = 0
  if r < 1 then wr = (1 - r) * 60 / rcap end
  local wt = 0
  if tk < cost then wt = (cost - tk) * 60 / tcap end
  retry = math.max(wr, wt)
end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(tk), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return {code, tostring(r), tostring(tk), tostring(retry)}
"""


class RateLimiter:
    """Memory or Redis backend with the fail-open-to-local policy described above."""

    def __init__(self, redis_url: str | None, *, timeout: float = 0.25, retry_after: float = 5.0) -> None:
        self.memory = MemoryLimiter()
        self.timeout = timeout
        self.retry_after = retry_after
        self.redis: Redis | None = None
        self._script: Any = None
        self._down_until = 0.0
        self.backend_errors = 0
        if redis_url:
            self.redis = Redis.from_url(
                redis_url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),  # our own fallback replaces redis-py's retries
                health_check_interval=0,
            )
            self._script = self.redis.register_script(LUA)

    @property
    def backend(self) -> str:
        return "redis" if self.redis is not None else "memory"

    def _redis_usable(self) -> bool:
        return self.redis is not None and time.monotonic() >= self._down_until

    def _mark_down(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("rate-limit store unavailable (%s); using local limits for %.0fs", exc, self.retry_after)
        self._down_until = time.monotonic() + self.retry_after
        self.backend_errors += 1

    async def _eval(self, key: str, rcap: int, tcap: int, cost: int, mode: str) -> list[Any]:
        result: list[Any] = await asyncio.wait_for(
            self._script(keys=["gw:rl:" + key], args=[rcap, tcap, cost, mode]), self.timeout * 2
        )
        return result

    async def _eval_retrying(self, key: str, rcap: int, tcap: int, cost: int, mode: str) -> list[Any]:
        """One call; on a connection error, one retry on a fresh connection (a restarted Redis
        answers it) before the caller falls back. A timeout is not retried: Redis is slow, not gone."""
        try:
            return await self._eval(key, rcap, tcap, cost, mode)
        except (RedisError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise
            log.info("rate-limit store connection failed (%s); reconnecting once", exc)
            return await self._eval(key, rcap, tcap, cost, mode)

    async def take(self, key: str, rcap: int, tcap: int, cost: int) -> Decision:
        if self._redis_usable():
            try:
                code, r, t, retry = await self._eval_retrying(key, rcap, tcap, cost, "take")
                self.memory.mirror(key, float(r), float(t))
                return _decision(int(code), float(r), float(t), rcap, tcap, float(retry), "redis")
            except (RedisError, OSError, TimeoutError) as exc:
                self._mark_down(exc)
        return self.memory.take(key, rcap, tcap, cost, "fallback" if self.redis is not None else "memory")

    async def adjust(self, key: str, rcap: int, tcap: int, delta: int) -> None:
        if delta == 0:
            return
        if self._redis_usable():
            try:
                _, r, t, _ = await self._eval_retrying(key, rcap, tcap, delta, "adjust")
                self.memory.mirror(key, float(r), float(t))
                return
            except (RedisError, OSError, TimeoutError) as exc:
                self._mark_down(exc)
        self.memory.adjust(key, rcap, tcap, delta)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
