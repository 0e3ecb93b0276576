"""Fixtures for the pipeline suites: an isolated run context, cache dir and Trivy cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from pipeline.core.context import RunContext
from tests.helpers.dagger_harness import Harness, harness_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunContext:
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TRIVY_CACHE_DIR", str(tmp_path / "trivy-cache"))  # no DB here, never the user's
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # Every project the pipeline builds declares the model it ships (build pins its revision).
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "model.yaml").write_text((REPO / "app" / "model.yaml").read_text())
    # The local executor, even when the suite itself runs inside a Dagger function (PIPELINE_EXECUTOR=dagger).
    return RunContext(
        run_dir=run_dir,
        repo_root=repo,
        console=Console(stderr=True, force_terminal=False),
        executor="local",
    )


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """The Dagger module under the SDK with only the engine's leaf calls faked (tests/helpers/dagger_harness.py)."""
    with harness_for(monkeypatch) as h:
        yield h
