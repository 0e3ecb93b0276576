"""trivy-operator gate on VulnerabilityReports that validate against the CRD schema."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline.checks import trivy_operator
from tests.helpers.trivy_reports import report_validator, vulnerability, vulnerability_report

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
GW = "sha256:" + "1" * 64
VLLM = "sha256:" + "2" * 64


def vuln(vid: str, severity: str, fixed: str = "") -> dict[str, Any]:
    return vulnerability(vid, severity, fixed)


def report(digest: str, age_hours: float, vulns: list[dict[str, Any]], container: str = "gateway") -> dict[str, Any]:
    return vulnerability_report(
        digest,
        container,
        vulns,
        updated=NOW - dt.timedelta(hours=age_hours),
        namespace="llm-dev",
        name=f"replicaset-llm-{container}",
    )


@pytest.fixture(scope="module")
def validator(crd_schemas: Path) -> jsonschema.Draft7Validator:
    return report_validator(crd_schemas)


def checked(validator: jsonschema.Draft7Validator, *reports: dict[str, Any]) -> list[dict[str, Any]]:
    for r in reports:
        validator.validate(r)  # the fixtures are real-shaped reports
    return list(reports)


def test_fresh_clean_reports_pass(validator: jsonschema.Draft7Validator) -> None:
    reports = checked(
        validator,
        report(GW, 2, [vuln("CVE-1", "HIGH"), vuln("CVE-2", "LOW", "1.1")]),  # HIGH without a fix: allowed
        report(VLLM, 1, [], container="vllm"),
    )
    result = trivy_operator.gate(reports, [GW, VLLM], NOW, dt.timedelta(hours=24))
    assert result.ok, result.summary()


def test_fixable_critical_fails_naming_cve(validator: jsonschema.Draft7Validator) -> None:
    reports = checked(validator, report(GW, 2, [vuln("CVE-9", "CRITICAL", "3.0.1")]), report(VLLM, 1, [], "vllm"))
    result = trivy_operator.gate(reports, [GW, VLLM], NOW, dt.timedelta(hours=24))
    assert not result.ok
    assert result.violations == [
        f"{GW}: fixable CRITICAL/HIGH: llm-dev/replicaset-llm-gateway: CVE-9 CRITICAL openssl 1.0.0 → 3.0.1"
    ]


def test_missing_and_stale_reports_fail(validator: jsonschema.Draft7Validator) -> None:
    reports = checked(validator, report(GW, 30, []), report("sha256:" + "9" * 64, 1, []))
    result = trivy_operator.gate(reports, [GW, VLLM], NOW, dt.timedelta(hours=24))
    assert not result.ok
    reasons = {v.digest: v.reason for v in result.images}
    assert reasons[GW].startswith("stale report (30.0 h old")
    assert reasons[VLLM].startswith("no VulnerabilityReport")


def test_no_digests_is_not_a_pass() -> None:
    assert not trivy_operator.gate([], [], NOW, dt.timedelta(hours=24)).ok


def test_fetch_reports_uses_custom_objects_api(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client, config

    pages = [{"items": [{"a": 1}], "metadata": {"continue": "t"}}, {"items": [{"b": 2}], "metadata": {}}]
    seen: list[tuple[Any, ...]] = []

    class FakeApi:
        def list_namespaced_custom_object(self, *args: Any, **kw: Any) -> dict[str, Any]:
            seen.append((*args, kw.get("_continue")))
            return pages[len(seen) - 1]

    monkeypatch.setattr(config, "load_kube_config", lambda context=None: None)
    monkeypatch.setattr(client, "CustomObjectsApi", FakeApi)
    assert trivy_operator.fetch_reports("llm-dev") == [{"a": 1}, {"b": 2}]
    assert seen[0][:4] == ("aquasecurity.github.io", "v1alpha1", "llm-dev", "vulnerabilityreports")
    assert seen[1][-1] == "t"
