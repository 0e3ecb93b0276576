"""Helpers for chart tests: `helm template` with given values, parsed."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.runtime.tools import require

Template = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def chart(repo_root: Path) -> Path:
    return repo_root / "charts" / "llm-service"


def env_files(repo_root: Path, env: str) -> list[Path]:
    return [repo_root / "environments" / env / "values.yaml", repo_root / "environments" / env / "release.yaml"]


@pytest.fixture(scope="session")
def helm_template(chart: Path) -> Template:
    helm = require("helm")

    def _template(*files: Path, sets: tuple[str, ...] = (), expect_ok: bool = True, env: str = "dev") -> Any:
        argv = [helm, "template", "llm-service", str(chart), "--namespace", f"llm-{env}"]
        for f in files:
            argv += ["-f", str(f)]
        for s in sets:
            argv += ["--set", s]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if not expect_ok:
            assert proc.returncode != 0, "expected helm template to fail"
            return proc.stderr
        assert proc.returncode == 0, proc.stderr
        return [d for d in yaml.safe_load_all(proc.stdout) if d]

    return _template


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The one model-serving workload: the Deployment, or the Argo Rollouts Rollout when rollout.enabled."""
    (found,) = [d for d in docs if d["kind"] in ("Deployment", "Rollout")]
    return found
