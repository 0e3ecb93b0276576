"""The embedded registry of a deleted checkout stops by itself (pipeline.runtime.registry's
watchdog), on the real `docker-registry`; one whose checkout is still there keeps serving."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from pipeline.runtime import registry
from pipeline.runtime.tools import find

INTERVAL = 0.2


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not registry._alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def binary() -> str:
    exe = find(registry.BINARY)
    if exe is None:
        pytest.fail(f"{registry.BINARY} is not installed: `make tools` installs it")
    return exe


def test_the_registry_of_a_deleted_checkout_stops_and_its_watchdog_with_it(tmp_path: Path, binary: str) -> None:
    # As `make ci` in a throwaway clone: state under <clone>/.cache/registry, then the clone is removed.
    checkout = tmp_path / "clone"
    sdir = checkout / ".cache" / "registry"
    reg = registry.ensure(sdir, binary=binary, watch_interval=INTERVAL)
    assert reg.pid is not None
    try:
        time.sleep(4 * INTERVAL)
        assert registry.status(sdir) == reg, "the watchdog stopped a registry whose data is still there"
        shutil.rmtree(checkout)
        assert gone_within(reg.pid, 10.0), f"registry {reg.pid} still serving a deleted directory"
    finally:
        registry._terminate(reg.pid, grace=2.0)


def test_the_watchdog_returns_when_the_registry_is_stopped(tmp_path: Path, binary: str) -> None:
    sdir = tmp_path / "registry"
    reg = registry.ensure(sdir, binary=binary, watch_interval=INTERVAL)
    assert reg.pid is not None
    assert registry.stop(sdir)
    # The watchdog in this process, on the stopped registry: it returns at once, having stopped nothing.
    started = time.monotonic()
    assert registry.watch(reg.pid, sdir / "data", INTERVAL) is False
    assert time.monotonic() - started < 1.0
