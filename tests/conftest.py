"""Fixtures shared by every suite: repo paths, the CRD schema location, free ports; and the check that
no process the suite started outlives it (tests/helpers/suite_processes.py)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from pipeline.runtime import registry
from pipeline.runtime.procs import free_port
from tests.helpers import suite_processes

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


# --- no process of the suite survives it ---------------------------------------------------------
# Each pytest process (the controller and every xdist worker) marks what it starts with its own
# value of MARK_VAR; at the end it stops what is left and fails the run, naming each process. The
# checkout's own embedded registry, started by a stage under test, is stopped without failing it.
_LEFTOVERS: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    _refuse_another_organisation()
    os.environ[suite_processes.MARK_VAR] = uuid.uuid4().hex


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent without xdist
def pytest_testnodedown(node: object, error: object) -> None:
    # xdist (controller side): what a worker had to stop.
    _LEFTOVERS.extend(getattr(node, "workeroutput", {}).get("suite_leftovers", []))


def _stop_project_registry(mark: str) -> str | None:
    """The checkout's embedded registry, if a test of this process started it (stages that build
    leave it serving, as `make ci` does for a user): the harness stops it, by its state dir."""
    serving = registry.status()
    if serving is None or serving.pid not in suite_processes.marked(mark):
        return None
    registry.stop()
    return f"stopped the checkout's embedded registry (pid {serving.pid}) that the suite started"


@pytest.hookimpl(trylast=True)  # after xdist has shut its workers down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    mark = os.environ.get(suite_processes.MARK_VAR, "")
    note = _stop_project_registry(mark) if mark else None
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if note and reporter is not None:
        reporter.write_line(note)
    stopped = suite_processes.stop_leftovers(mark, exclude=frozenset({os.getpid()})) if mark else []
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports
        workeroutput["suite_leftovers"] = stopped
        return
    _LEFTOVERS.extend(stopped)
    if _LEFTOVERS:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        lines = ["processes started by the suite were still running after it (stopped now):", *_LEFTOVERS]
        if reporter is not None:
            reporter.write_sep("=", "leftover processes", red=True)
            for line in lines:
                reporter.write_line(line)


def _refuse_another_organisation() -> None:
    """The suite asserts the example organisation's values (tests/example-platform.yaml). In a tree
    whose platform.yaml is another organisation's, `python -m pipeline test` runs it on a copy
    re-derived for the example; run directly it would fail on every value, so it refuses up front."""
    example, platform = REPO / "tests" / "example-platform.yaml", REPO / "platform.yaml"
    if example.is_file() and platform.is_file() and example.read_text() != platform.read_text():
        raise pytest.UsageError(
            "platform.yaml is not the example organisation's (tests/example-platform.yaml), whose values the "
            "tests assert: run `python -m pipeline test` (it tests a copy re-derived for the example), or "
            "copy platform.yaml to tests/example-platform.yaml if you changed the example itself"
        )
