"""Fixtures shared by every suite: repo paths, the CRD schema location, free ports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.procs import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def crd_schemas() -> Path:
    """The CRD JSON schemas (kubeconform layout); $CRD_SCHEMA_LOCATION overrides the default."""
    path = Path(os.environ.get("CRD_SCHEMA_LOCATION", REPO.parent / "shared" / "schemas" / "crds"))
    if not path.is_dir():
        pytest.fail(f"CRD schemas not found at {path}; set CRD_SCHEMA_LOCATION")
    return path


@pytest.fixture
def port() -> int:
    return free_port()
