"""Fixtures for the simulator suites: a real `python -m app.simulator` process on a free port."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.runtime.procs import ManagedProcess, free_port, running

SimFactory = Callable[..., contextlib.AbstractContextManager[tuple[str, ManagedProcess]]]


@pytest.fixture
def start_sim(tmp_path: Path, repo_root: Path) -> SimFactory:
    """`with start_sim("--itl-ms", "5") as (base_url, proc):` runs `python -m app.simulator` on a free port."""

    @contextlib.contextmanager
    def _start(
        *args: str, model: str = "sim-test", env: dict[str, str] | None = None
    ) -> Iterator[tuple[str, ManagedProcess]]:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "app.simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            model,
            *args,
        ]
        base = f"http://127.0.0.1:{port}"
        with running(
            "simulator",
            argv,
            tmp_path / f"sim-{port}.log",
            ready_url=f"{base}/health",
            timeout=30,
            env=env,
            cwd=repo_root,
        ) as proc:
            yield base, proc

    return _start
