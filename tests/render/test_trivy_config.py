"""trivy_config.scan: trivy's report is reused only while every byte trivy reads and every option
is the same; a changed manifest or option runs trivy again, a failed run is never stored (real trivy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.checks import trivy_config
from pipeline.runtime.tools import require

pytestmark = pytest.mark.slow

PRIVILEGED_CHECK = "KSV-0017"


def _deployment(privileged: bool) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          image: registry.example.com/web:1.0.0
          securityContext: {{privileged: {str(privileged).lower()}}}
"""


def _failed_ids(report: dict[str, Any] | None) -> set[str]:
    assert report is not None
    return {
        str(m.get("ID"))
        for r in report.get("Results") or []
        for m in r.get("Misconfigurations") or []
        if m.get("Status") == "FAIL"
    }


@pytest.fixture
def argv() -> list[str]:
    trivy = require("trivy")
    base = [trivy, "config", "--quiet", "--skip-check-update", "--skip-version-check", "--disable-telemetry"]
    return [*base, "--misconfig-scanners", "kubernetes", "--skip-dirs", "argocd", "--format", "json"]


def test_report_reused_only_while_inputs_are_identical(tmp_path: Path, argv: list[str]) -> None:
    target, cache = tmp_path / "rendered", tmp_path / "cache"
    (target / "staging").mkdir(parents=True)
    (target / "argocd").mkdir()
    (target / "staging/manifests.yaml").write_text(_deployment(privileged=True))
    (target / "argocd/manifests.yaml").write_text("kind: List\nitems: []\n")

    def scan(args: list[str]) -> trivy_config.Scan:
        return trivy_config.scan(args, target, cwd=tmp_path, cache=cache, skip_dirs=("argocd",))

    first = scan(argv)
    assert not first.reused and PRIVILEGED_CHECK in _failed_ids(first.report)
    # A file trivy is told to skip changes: the same report, not run again.
    (target / "argocd/manifests.yaml").write_text("kind: List\nitems: [{}]\n")
    again = scan(argv)
    assert again.reused and again.report == first.report
    # Another option: run again.
    assert not scan([*argv[:-2], "--severity", "LOW", *argv[-2:]]).reused
    # The manifest changes: trivy runs again and its finding is gone.
    (target / "staging/manifests.yaml").write_text(_deployment(privileged=False))
    fixed = scan(argv)
    assert not fixed.reused and PRIVILEGED_CHECK not in _failed_ids(fixed.report)
    # Back to the first bytes: the first report again, from the cache.
    (target / "staging/manifests.yaml").write_text(_deployment(privileged=True))
    back = scan(argv)
    assert back.reused and back.report == first.report


def test_a_failed_run_is_reported_and_never_stored(tmp_path: Path, argv: list[str]) -> None:
    target, cache = tmp_path / "rendered", tmp_path / "cache"
    (target / "staging").mkdir(parents=True)
    (target / "staging/manifests.yaml").write_text(_deployment(privileged=True))
    bad = [*argv[:2], "--no-such-option", *argv[2:]]
    failed = trivy_config.scan(bad, target, cwd=tmp_path, cache=cache)
    assert failed.report is None and "no-such-option" in failed.stderr
    assert not trivy_config.scan(bad, target, cwd=tmp_path, cache=cache).reused
    assert not cache.exists() or not any(cache.iterdir())
