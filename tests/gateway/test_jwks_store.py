"""JwksStore in process: fetches are single-flight and rate-limited, also while no key is loaded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from app.gateway.auth import JwksStore

from .conftest import Keys
from .jwks_server import JwksServer


def _wait_for(cond: Callable[[], bool], timeout: float = 3) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)


def _store(url: str, *, min_refresh: float = 30.0, cache: float = 300.0, timeout: float = 1.0) -> JwksStore:
    return JwksStore(
        url, is_url=True, cache_seconds=cache, min_refresh_seconds=min_refresh, fetch_timeout_seconds=timeout
    )


@pytest.mark.parametrize("mode", ["error", "empty"])
def test_no_keys_every_attempt_after_the_first_is_rate_limited(mode: str) -> None:
    with JwksServer(mode=mode) as idp:
        store = _store(idp.url, min_refresh=30)

        async def main() -> None:
            # 50 concurrent requests with arbitrary kids, then 50 more: one fetch in all.
            assert await asyncio.gather(*(store.get(f"kid-{i}") for i in range(50))) == [None] * 50
            t0 = time.monotonic()
            for i in range(50):
                assert await store.get(f"other-{i}") is None
            assert time.monotonic() - t0 < 0.5  # rate-limited: nobody waits for the IdP
            assert 29 < store.retry_in() <= 30

        asyncio.run(main())
        assert idp.fetches == 1 and store.fetches == 1


def test_no_keys_retries_after_min_refresh_and_recovers(keys: Keys) -> None:
    with JwksServer(mode="error") as idp:
        store = _store(idp.url, min_refresh=0.3)

        async def main() -> None:
            assert await store.get("es-1") is None
            assert await store.get("es-1") is None
            assert idp.fetches == 1
            idp.set(mode="ok", body=keys.jwks.read_bytes())
            await asyncio.sleep(0.35)
            assert await store.get("es-1") is not None

        asyncio.run(main())
        assert idp.fetches == 2


def test_unknown_kid_refetch_is_rate_limited(keys: Keys) -> None:
    with JwksServer(body=keys.jwks.read_bytes()) as idp:
        store = _store(idp.url, min_refresh=30)

        async def main() -> None:
            assert await store.get("es-1") is not None
            results = await asyncio.gather(*(store.get(f"unknown-{i}") for i in range(30)))
            assert results == [None] * 30
            assert store.keys  # a failed lookup never drops the keys

        asyncio.run(main())
        assert idp.fetches == 1


def test_hanging_idp_costs_one_timeout_not_one_per_request() -> None:
    with JwksServer(mode="hang") as idp:
        store = _store(idp.url, min_refresh=30, timeout=0.5)

        async def main() -> None:
            t0 = time.monotonic()
            assert await asyncio.gather(*(store.get(f"k{i}") for i in range(20))) == [None] * 20
            # They all shared the one fetch (serialised, 20 x 0.5 s would be 10 s).
            assert time.monotonic() - t0 < 2.5
            t1 = time.monotonic()
            assert await store.get("k") is None
            assert time.monotonic() - t1 < 0.1

        asyncio.run(main())
        assert idp.fetches == 1


def test_periodic_reread_runs_in_the_background(keys: Keys) -> None:
    with JwksServer(body=keys.jwks.read_bytes()) as idp:
        store = _store(idp.url, min_refresh=0, cache=0.05, timeout=2)

        async def main() -> None:
            assert await store.get("es-1") is not None
            idp.set(mode="hang")
            await asyncio.sleep(0.1)  # the cache is stale now, and the IdP hangs
            t0 = time.monotonic()
            for _ in range(20):
                assert await store.get("es-1") is not None  # the cached key keeps serving
            assert time.monotonic() - t0 < 0.5
            assert store.fetches == 2  # one background re-read started, not one per request
            await asyncio.to_thread(_wait_for, lambda: idp.fetches >= 2)
            assert idp.fetches == 2
            await store.aclose()

        asyncio.run(main())


def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(keys: Keys) -> None:
    with JwksServer(body=keys.jwks.read_bytes(), mode="hang") as idp:
        store = _store(idp.url, min_refresh=30, timeout=0.5)

        async def main() -> None:
            first = asyncio.ensure_future(store.get("es-1"))
            second = asyncio.ensure_future(store.get("es-1"))
            await asyncio.sleep(0.05)
            first.cancel()  # e.g. its client disconnected
            assert await second is None  # still got the fetch's outcome (a timeout), not a CancelledError

        asyncio.run(main())
        assert idp.fetches == 1
