"""Render's checks over the Argo Rollouts objects of an env (docs/rollout.md).

- every AnalysisTemplate metric has conditions of the form `result[0] <op> number` only (pipeline/rollout/
  analysis.py: what the canary drill can evaluate identically) and sane limits;
- every Rollout's analysis steps name a rendered AnalysisTemplate and supply each argument it leaves open;
- every Rollout's canary stays within replicas + its `<labelDomain>/model-pod-surge` budget for every replica
  count its autoscaler may set (pipeline/rollout/pod_budget.py, Argo Rollouts' replica arithmetic);
- every HPA / ScaledObject scales a workload that is rendered (the Rollout once the Deployment is gone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.rollout import analysis, pod_budget

ARGO = "argoproj.io/v1alpha1"
# Beside an env's manifests.yaml: its Rollouts as Deployments, for scanners that only know built-in kinds.
TRIVY_VIEW = "rollouts-as-deployments.yaml"


def trivy_view(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each Rollout as the Deployment with its pod template (strategy dropped), so trivy's checks see its pods."""
    out = []
    for rollout in _of(docs, "Rollout", ARGO):
        spec = {k: v for k, v in (rollout.get("spec") or {}).items() if k != "strategy"}
        out.append(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": rollout.get("metadata") or {}, "spec": spec}
        )
    return out


def _name(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('kind')} <{(doc.get('metadata') or {}).get('name', '?')}>"


def _of(docs: list[dict[str, Any]], kind: str, api: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind and (api is None or d.get("apiVersion") == api)]


def _replica_range(rollout: Mapping[str, Any], docs: list[dict[str, Any]]) -> list[int]:
    """spec.replicas, else every count between the min and max of the autoscaler that targets it."""
    name = rollout["metadata"]["name"]
    for hpa in _of(docs, "HorizontalPodAutoscaler") + _of(docs, "ScaledObject"):
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("kind") == "Rollout" and ref.get("name") == name:
            low = int(spec.get("minReplicas", spec.get("minReplicaCount", 1)) or 1)
            high = int(spec.get("maxReplicas", spec.get("maxReplicaCount", low)) or low)
            return list(range(max(low, 1), high + 1))
    return [int((rollout.get("spec") or {}).get("replicas", 1))]


def _surge(rollout: Mapping[str, Any]) -> int:
    annotations = (rollout.get("metadata") or {}).get("annotations") or {}
    values = [v for k, v in annotations.items() if k.endswith("/" + pod_budget.SURGE_ANNOTATION)]
    return int(values[0]) if values else 0


def problems(docs: list[dict[str, Any]]) -> list[str]:
    """Every problem of the env's Rollouts, AnalysisTemplates and autoscaler targets; messages name the object."""
    out: list[str] = []
    templates = {t["metadata"]["name"]: analysis.from_template(t) for t in _of(docs, "AnalysisTemplate", ARGO)}
    for t in _of(docs, "AnalysisTemplate", ARGO):
        out += [f"{_name(t)}: {p}" for p in analysis.validate(templates[t["metadata"]["name"]])]
    for rollout in _of(docs, "Rollout", ARGO):
        canary = ((rollout.get("spec") or {}).get("strategy") or {}).get("canary") or {}
        for i, step in enumerate(canary.get("steps") or []):
            if "analysis" not in step:
                continue
            supplied = {a.get("name") for a in step["analysis"].get("args") or []}
            for ref in step["analysis"].get("templates") or []:
                tmpl = templates.get(ref.get("templateName"))
                if tmpl is None:
                    out.append(
                        f"{_name(rollout)}: steps[{i}] names AnalysisTemplate {ref.get('templateName')}, not rendered"
                    )
                    continue
                open_args = sorted(k for k, v in tmpl.args.items() if v is None and k not in supplied)
                if open_args:
                    out.append(
                        f"{_name(rollout)}: steps[{i}] leaves argument(s) {', '.join(open_args)} without a value"
                    )
        out += pod_budget.problems(rollout, _replica_range(rollout, docs), _surge(rollout))
    workloads = {(d.get("apiVersion"), d.get("kind"), (d.get("metadata") or {}).get("name")) for d in docs}
    for scaler in _of(docs, "HorizontalPodAutoscaler") + _of(docs, "ScaledObject"):
        ref = (scaler.get("spec") or {}).get("scaleTargetRef") or {}
        target = (ref.get("apiVersion", "apps/v1"), ref.get("kind", "Deployment"), ref.get("name"))
        if target not in workloads:
            out.append(f"{_name(scaler)}: scales {target[1]} <{target[2]}> ({target[0]}), which is not rendered")
    return out
