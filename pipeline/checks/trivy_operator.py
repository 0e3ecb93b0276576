"""Promotion gate over trivy-operator `VulnerabilityReport`s (aquasecurity.github.io/v1alpha1).

trivy-operator scans every workload's images inside the cluster and writes one report per
container. Before a release is promoted into an environment, `gate()` checks that each image
digest being promoted has a fresh report there and that no report shows a CRITICAL/HIGH
vulnerability with a fix available.

`fetch_reports()` is the live path (official kubernetes client, CustomObjectsApi) and needs
a reachable cluster; the tests feed `gate()` report objects validated against the CRD schema.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pipeline.core import environments

log = logging.getLogger(__name__)

GROUP = "aquasecurity.github.io"
VERSION = "v1alpha1"
PLURAL = "vulnerabilityreports"
BLOCKING = ("CRITICAL", "HIGH")
# trivy-operator labels reports with the container name and the workload it belongs to.
LABEL_CONTAINER = "trivy-operator.container.name"
LABEL_RESOURCE_KIND = "trivy-operator.resource.kind"
LABEL_RESOURCE_NAME = "trivy-operator.resource.name"


@dataclass
class ImageVerdict:
    digest: str
    ok: bool
    reason: str
    reports: list[str] = field(default_factory=list)  # "<namespace>/<name>" of matching reports


@dataclass
class GateResult:
    ok: bool
    images: list[ImageVerdict]

    @property
    def violations(self) -> list[str]:
        return [f"{v.digest}: {v.reason}" for v in self.images if not v.ok]

    def summary(self) -> str:
        if self.ok:
            return f"{len(self.images)} image(s) have fresh trivy-operator reports with no fixable CRITICAL/HIGH"
        return "; ".join(self.violations)


def _digest_of(report: dict[str, Any]) -> str:
    artifact = (report.get("report") or {}).get("artifact") or {}
    digest = str(artifact.get("digest") or "")
    if digest:
        return digest
    # Some scanners leave digest empty and put it into the tag ref (repo@sha256:...).
    tag = str(artifact.get("tag") or "")
    return tag.split("@", 1)[1] if "@" in tag else ""


def _updated(report: dict[str, Any]) -> dt.datetime | None:
    raw = (report.get("report") or {}).get("updateTimestamp") or (report.get("metadata") or {}).get("creationTimestamp")
    if not raw:
        return None
    try:
        ts = dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def blocking_vulnerabilities(report: dict[str, Any]) -> list[str]:
    """CRITICAL/HIGH vulnerabilities that have a fixed version."""
    out = []
    for v in (report.get("report") or {}).get("vulnerabilities") or []:
        if v.get("severity") in BLOCKING and v.get("fixedVersion"):
            out.append(
                f"{v.get('vulnerabilityID')} {v.get('severity')} {v.get('resource')} "
                f"{v.get('installedVersion')} → {v.get('fixedVersion')}"
            )
    return out


def _name(report: dict[str, Any]) -> str:
    md = report.get("metadata") or {}
    return f"{md.get('namespace', '?')}/{md.get('name', '?')}"


def gate(
    reports: Sequence[dict[str, Any]],
    digests: Sequence[str],
    now: dt.datetime,
    max_age: dt.timedelta,
) -> GateResult:
    """Each digest needs ≥1 matching report, the newest no older than max_age, none with a blocking finding."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    by_digest: dict[str, list[dict[str, Any]]] = {}
    for r in reports:
        by_digest.setdefault(_digest_of(r), []).append(r)
    verdicts: list[ImageVerdict] = []
    for digest in digests:
        matching = by_digest.get(digest, [])
        names = [_name(r) for r in matching]
        if not matching:
            verdicts.append(ImageVerdict(digest, False, "no VulnerabilityReport for this digest (not scanned yet?)"))
            continue
        stamps = [ts for ts in (_updated(r) for r in matching) if ts is not None]
        newest = max(stamps) if stamps else None
        if newest is None or now - newest > max_age:
            age = "unknown age" if newest is None else f"{(now - newest).total_seconds() / 3600:.1f} h old"
            verdicts.append(
                ImageVerdict(digest, False, f"stale report ({age} > {max_age.total_seconds() / 3600:.0f} h)", names)
            )
            continue
        blocking = [f"{_name(r)}: {b}" for r in matching for b in blocking_vulnerabilities(r)]
        if blocking:
            verdicts.append(ImageVerdict(digest, False, "fixable CRITICAL/HIGH: " + "; ".join(blocking[:10]), names))
            continue
        verdicts.append(ImageVerdict(digest, True, "fresh and clean", names))
    ok = bool(verdicts) and all(v.ok for v in verdicts)
    if not digests:
        verdicts = []
        ok = False
    return GateResult(ok=ok, images=verdicts)


def namespace_for(env: str) -> str:
    """The namespace where trivy-operator writes the reports of `env`'s workloads."""
    if not env or not env.replace("-", "").isalnum():
        raise ValueError(f"not an env name: {env!r}")
    return environments.namespace_for(env)


def fetch_reports(namespace: str, kube_context: str | None = None) -> list[dict[str, Any]]:
    """List VulnerabilityReports in `namespace` (needs a cluster and RBAC `list` on vulnerabilityreports)."""
    from kubernetes import client, config

    try:
        config.load_kube_config(context=kube_context)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        # Running inside the cluster (e.g. the promotion job itself).
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    api = client.CustomObjectsApi()
    items: list[dict[str, Any]] = []
    cont: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": 500}
        if cont:
            kwargs["_continue"] = cont
        page = cast(dict[str, Any], api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs))
        items.extend(page.get("items") or [])
        cont = (page.get("metadata") or {}).get("continue")
        if not cont:
            return items
