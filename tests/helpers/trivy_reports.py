"""Real-shaped trivy-operator VulnerabilityReports (they validate against the CRD schema)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema

from pipeline.checks import trivy_operator

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")


def vulnerability(vid: str, severity: str, fixed: str = "", installed: str = "1.0.0") -> dict[str, Any]:
    """One `report.vulnerabilities[]` entry for openssl."""
    return {
        "vulnerabilityID": vid,
        "severity": severity,
        "fixedVersion": fixed,
        "installedVersion": installed,
        "resource": "openssl",
        "title": f"{vid} in openssl",
        "publishedDate": "2026-01-01T00:00:00Z",
        "lastModifiedDate": "2026-01-02T00:00:00Z",
    }


def vulnerability_report(
    digest: str, container: str, vulns: list[dict[str, Any]], *, updated: dt.datetime, namespace: str, name: str
) -> dict[str, Any]:
    """A VulnerabilityReport `namespace/name` of `container` (image `llm/<container>@digest`), updated at `updated`."""
    counts = {f"{s.lower()}Count": sum(v["severity"] == s for v in vulns) for s in SEVERITIES}
    return {
        "apiVersion": "aquasecurity.github.io/v1alpha1",
        "kind": "VulnerabilityReport",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {trivy_operator.LABEL_CONTAINER: container, trivy_operator.LABEL_RESOURCE_KIND: "ReplicaSet"},
        },
        "report": {
            "artifact": {"repository": f"llm/{container}", "digest": digest, "tag": "0.1.0"},
            "os": {"family": "debian", "name": "12.8"},
            "registry": {"server": "registry.example.com"},
            "scanner": {"name": "Trivy", "vendor": "Aqua Security", "version": "0.76.0"},
            "summary": {**counts, "unknownCount": 0},
            "updateTimestamp": updated.isoformat().replace("+00:00", "Z"),
            "vulnerabilities": vulns,
        },
    }


def report_validator(crd_schemas: Path) -> jsonschema.Draft7Validator:
    """The VulnerabilityReport CRD schema (kubeconform layout under `crd_schemas`)."""
    schema = json.loads((crd_schemas / "aquasecurity.github.io" / "vulnerabilityreport_v1alpha1.json").read_text())
    return jsonschema.Draft7Validator(schema)
