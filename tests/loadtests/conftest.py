"""Fixtures for the load-test suite: SLO documents, synthetic samples, a simulator factory."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from loadtests.slo import SLO, validate
from pipeline.runtime.procs import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dev_doc() -> dict[str, Any]:
    """The shipped dev SLO file as a plain dict (tests mutate copies of it)."""
    data: dict[str, Any] = YAML(typ="safe").load((REPO / "loadtests" / "slo" / "dev.yaml").read_text())
    return copy.deepcopy(data)


@pytest.fixture
def dev_slo(dev_doc: dict[str, Any]) -> SLO:
    return validate(dev_doc)


@pytest.fixture
def short_slo_file(tmp_path: Path, dev_doc: dict[str, Any]) -> Callable[..., Path]:
    """Write a dev-derived SLO file with a short run (and optional overrides) for end-to-end tests."""

    def write(duration_s: float = 6, warmup_s: float = 1, **overrides: Any) -> Path:
        doc = copy.deepcopy(dev_doc)
        doc["run"].update(duration_s=duration_s, warmup_s=warmup_s)
        for key, value in overrides.items():
            # `abort={...}` replaces a section; `run__users=2` sets one field of it.
            section, _, field = key.partition("__")
            if field:
                doc[section][field] = value
            else:
                doc[section] = value
        validate(doc)
        path = tmp_path / "slo.yaml"
        with path.open("w") as fh:
            YAML(typ="safe").dump(doc, fh)
        return path

    return write


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[[Sequence[str]], str]]:
    """Start `python -m app.simulator` with the given flags on a free port; returns its URL."""
    started: list[ManagedProcess] = []

    def start(flags: Sequence[str]) -> str:
        port = free_port()
        argv = [sys.executable, "-m", "app.simulator", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--model", "sim-llama", *flags]
        mp = ManagedProcess(f"simulator-{port}", argv, tmp_path / f"simulator-{port}.log", cwd=REPO).start()
        started.append(mp)
        mp.wait_http(f"http://127.0.0.1:{port}/health", timeout=30)
        return f"http://127.0.0.1:{port}"

    yield start
    for mp in started:
        mp.stop()
