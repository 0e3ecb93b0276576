"""The trivy-operator input of a promotion (policies/promotion.rego `input.trivy_operator`).

VulnerabilityReports come from a file (`kubectl get vulnerabilityreports -o json`) or live from
the source env's namespace (`--trivy-reports cluster[:CONTEXT]`); the gate itself is
pipeline.checks.trivy_operator. Required by data for some envs, and whenever reports are given
(an unreadable source then refuses: never a silent pass).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.error import YAMLError

from pipeline.checks import trivy_operator
from pipeline.gitops.release import Release

# (namespace, kube context) → reports: the live path's lister, injectable for tests.
Lister = Callable[[str, str | None], list[dict[str, Any]]]


@dataclass(frozen=True)
class TrivyCluster:
    """`--trivy-reports cluster[:CONTEXT]`: read VulnerabilityReports live from the source env's namespace."""

    context: str | None = None


def parse_trivy_reports(value: str) -> Path | TrivyCluster:
    """`cluster` / `cluster:CONTEXT` → the live path; anything else is a file (`./cluster` for a file so named)."""
    if value == "cluster":
        return TrivyCluster()
    if value.startswith("cluster:"):
        context = value.removeprefix("cluster:")
        if not context:
            raise argparse.ArgumentTypeError("cluster:CONTEXT needs a kube context name after the colon")
        return TrivyCluster(context)
    return Path(value)


def load_reports(path: Path) -> list[dict[str, Any]]:
    """VulnerabilityReports from a file: a `kind: List` (kubectl -o json/yaml), a plain list, or one report."""
    from ruamel.yaml import YAML

    raw = YAML(typ="safe").load(path.read_text())
    if isinstance(raw, dict):
        items = raw.get("items", []) if raw.get("kind", "").endswith("List") or "items" in raw else [raw]
    else:
        items = list(raw or [])
    return [r for r in items if isinstance(r, dict)]


def _fetch_live(lister: Lister | None, where: TrivyCluster, source: str) -> tuple[list[dict[str, Any]], str]:
    namespace = trivy_operator.namespace_for(source)
    lister = lister or trivy_operator.fetch_reports
    origin = f"cluster{':' + where.context if where.context else ''} namespace {namespace}"
    return lister(namespace, where.context), origin


def gate_input(
    trivy_reports: Path | TrivyCluster | None,
    lister: Lister | None,
    target: str,
    rel: Release,
    now: dt.datetime,
    params: Mapping[str, Any],
    source: str,
) -> dict[str, Any]:
    """Input for the trivy-operator rule: from a file, or live from the cluster (source env's namespace).

    Required by data for some envs; also required whenever `--trivy-reports` is given (an
    unreadable source then refuses: never a silent pass).
    """
    required = bool(params.get("trivy_operator_required", {}).get(target, False))
    requested = trivy_reports is not None
    base = {"required": required, "requested": requested}
    if not required and not requested:
        return {**base, "passed": True, "evaluated": False, "detail": "not required for this env"}
    if trivy_reports is None:
        return {
            **base,
            "passed": False,
            "evaluated": False,
            "detail": "no VulnerabilityReports given (--trivy-reports cluster[:CONTEXT] or FILE from "
            "`kubectl get vulnerabilityreports -o json`)",
        }
    if isinstance(trivy_reports, TrivyCluster):
        try:
            reports, origin = _fetch_live(lister, trivy_reports, source)
        except Exception as exc:  # no kubeconfig, unreachable API, RBAC: all refuse, with the reason
            namespace = trivy_operator.namespace_for(source)
            ctx_name = trivy_reports.context or "current context / in-cluster"
            return {
                **base,
                "passed": False,
                "evaluated": False,
                "detail": f"cannot list VulnerabilityReports in namespace {namespace} (kube context {ctx_name}): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
            }
    else:
        try:
            reports, origin = load_reports(trivy_reports), trivy_reports.name
        except (OSError, YAMLError) as exc:
            return {
                **base,
                "passed": False,
                "evaluated": False,
                "detail": f"cannot read {trivy_reports.name}: {exc}",
            }
    max_age = dt.timedelta(seconds=float(params.get("trivy_operator_max_age_seconds", 86400)))
    images = {rel.gateway_digest: "gateway", rel.vllm_digest: "vllm"}
    res = trivy_operator.gate(reports, list(images), now, max_age)
    if res.ok:
        detail = res.summary()
    else:
        detail = "; ".join(
            f"image <{images.get(v.digest, '?')}> {v.digest}: {v.reason}" for v in res.images if not v.ok
        )
    return {
        **base,
        "passed": res.ok,
        "evaluated": True,
        "source": origin,
        "detail": detail,
        "images": {
            images.get(v.digest, v.digest): {"ok": v.ok, "reason": v.reason, "reports": v.reports} for v in res.images
        },
    }
