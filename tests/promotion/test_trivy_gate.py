"""promote --to prod --trivy-reports FILE: the trivy-operator gate, fed real-shaped VulnerabilityReports."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.context import RunContext
from pipeline.core.result import StageResult, Status
from pipeline.gitops import promotion as pm
from pipeline.gitops.evidence import read_evidence
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo
from pipeline.stages import promote
from tests.helpers.trivy_reports import report_validator, vulnerability, vulnerability_report
from tests.promotion.conftest import ci_evidence

# Far enough ahead that prod's production soak time (1 day) has elapsed since the staging pin.
LATER = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)


def report(digest: str, container: str, vulns: list[dict[str, Any]], age_hours: float = 1) -> dict[str, Any]:
    return vulnerability_report(
        digest,
        container,
        vulns,
        updated=LATER - dt.timedelta(hours=age_hours),
        namespace="llm-staging",
        name=f"replicaset-llm-service-{container}",
    )


def vuln(vid: str, severity: str, fixed: str) -> dict[str, Any]:
    return vulnerability(vid, severity, fixed, installed="3.0.0")


@pytest.fixture
def write_reports(tmp_path: Path, crd_schemas: Path) -> Callable[..., Path]:
    validator = report_validator(crd_schemas)

    def write(*reports: dict[str, Any]) -> Path:
        for r in reports:
            validator.validate(r)  # real-shaped reports only
        path = tmp_path / "reports.json"
        # As `kubectl get vulnerabilityreports -o json` prints them.
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(reports)}))
        return path

    return write


@pytest.fixture
def staged(remote: str, tmp_path: Path, make_release: Callable[..., Release]) -> Release:
    rel = make_release(1)
    ctx = RunContext(run_dir=tmp_path / "p")
    assert promote.run(
        promote.PromoteOptions(to="dev", release=rel, evidence=ci_evidence(rel=rel), gitops_repo=remote), ctx
    ).ok
    assert promote.run(promote.PromoteOptions(to="staging", gitops_repo=remote, policy_profile="local"), ctx).ok
    return rel


def to_prod(remote: str, tmp_path: Path, reports: Path | None) -> StageResult:
    # The production profile: trivy-operator required for prod, 2 approvers, soak, built images.
    opts = promote.PromoteOptions(
        to="prod", gitops_repo=remote, approvers=["alice", "bob"], actor="rm", trivy_reports=reports, now=LATER
    )
    return promote.run(opts, RunContext(run_dir=tmp_path / "prod"))


def prod_release(remote: str, tmp_path: Path) -> Release | None:
    repo = GitOpsRepo(remote, tmp_path / "check")
    repo.sync()
    return pm.read_release(repo, "prod")


def test_clean_reports_for_the_promoted_digests_pass(
    remote: str, tmp_path: Path, staged: Release, write_reports: Callable[..., Path]
) -> None:
    reports = write_reports(
        report(staged.gateway_digest, "gateway", [vuln("CVE-2026-1000", "HIGH", "")]),  # no fix yet: allowed
        report(staged.vllm_digest, "vllm", [vuln("CVE-2026-1001", "LOW", "3.0.1")]),
    )
    res = to_prod(remote, tmp_path, reports)
    assert res.status is Status.PASSED, res.checks
    assert prod_release(remote, tmp_path) == staged
    repo = GitOpsRepo(remote, tmp_path / "ev")
    repo.sync()
    evidence = read_evidence(repo, "prod", staged.id)
    assert evidence is not None
    gate = evidence["promotions"][-1]["trivy_operator"]
    assert gate["passed"] and gate["evaluated"] and "2 image(s) have fresh trivy-operator reports" in gate["detail"]
    assert gate["images"]["gateway"]["reports"] == ["llm-staging/replicaset-llm-service-gateway"]


def test_fixable_critical_refuses_naming_cve_and_image(
    remote: str, tmp_path: Path, staged: Release, write_reports: Callable[..., Path]
) -> None:
    reports = write_reports(
        report(staged.gateway_digest, "gateway", []),
        report(staged.vllm_digest, "vllm", [vuln("CVE-2026-4242", "CRITICAL", "3.0.9")]),
    )
    res = to_prod(remote, tmp_path, reports)
    assert res.status is Status.FAILED
    (denial,) = [c.detail for c in res.checks if c.status is Status.FAILED]
    assert denial.startswith("env <prod> requires a clean trivy-operator gate: ")
    assert f"image <vllm> {staged.vllm_digest}" in denial and "CVE-2026-4242 CRITICAL openssl" in denial
    assert "gateway" not in denial  # only the failing image is named
    assert prod_release(remote, tmp_path) is None


def test_missing_report_refuses(
    remote: str, tmp_path: Path, staged: Release, write_reports: Callable[..., Path]
) -> None:
    reports = write_reports(report(staged.gateway_digest, "gateway", []))
    res = to_prod(remote, tmp_path, reports)
    details = [c.detail for c in res.checks if c.status is Status.FAILED]
    assert res.status is Status.FAILED
    assert details == [
        f"env <prod> requires a clean trivy-operator gate: image <vllm> {staged.vllm_digest}: "
        "no VulnerabilityReport for this digest (not scanned yet?)"
    ]
    # No file at all is refused too, with the hint where reports come from.
    res = to_prod(remote, tmp_path, None)
    assert any(
        "no VulnerabilityReports given (--trivy-reports cluster[:CONTEXT] or FILE" in c.detail for c in res.checks
    )
    assert prod_release(remote, tmp_path) is None
