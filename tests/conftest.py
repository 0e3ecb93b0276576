"""Fixtures shared by every suite: repo paths, the CRD schema location, free ports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.runtime.procs import free_port

REPO = Path(__file__).resolve().parent.parent

# Variables that change what the pipeline does (where it promotes, which executor it assumes, where
# it reads schemas or writes runs, who acts, where charts go). A test sees none of the caller's:
# the suite runs the same on a laptop, in CI and inside a Dagger function. A test that needs one
# sets it with monkeypatch. (Locations of installed tools and caches are left alone.)
PIPELINE_ENV_VARS = (
    "PIPELINE_GITOPS_REPO",
    "PIPELINE_EXECUTOR",
    "PIPELINE_CRD_SCHEMAS",
    "PIPELINE_RUNS_DIR",
    "PIPELINE_ACTOR",
    "PIPELINE_COMMIT",
    "PIPELINE_DIRTY",
    "PIPELINE_CHART_REGISTRY",
    "CHART_REGISTRY_USERNAME",
    "CHART_REGISTRY_PASSWORD",
    "LOADTEST_TOKEN",
    "GITHUB_ACTOR",
    "GITLAB_USER_LOGIN",
    "CI_COMMIT_AUTHOR",
    "BUILDKITE_BUILD_CREATOR_EMAIL",
)


@pytest.fixture(autouse=True)
def _isolated_pipeline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PIPELINE_ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def crd_schemas() -> Path:
    """The CRD JSON schemas (kubeconform layout): the repository's copy; $CRD_SCHEMA_LOCATION overrides it."""
    path = Path(os.environ.get("CRD_SCHEMA_LOCATION", REPO / "policies" / "crd-schemas"))
    if not path.is_dir():
        pytest.fail(f"CRD schemas not found at {path}; set CRD_SCHEMA_LOCATION")
    return path


@pytest.fixture
def port() -> int:
    return free_port()
