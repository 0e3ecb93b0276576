"""The bootstrap plan from policies/prerequisites.yaml, and its verification against a cluster.

Offline, `plan()` lists every prerequisite (component with its minimum version and how to install
it, the RWX StorageClass, PriorityClasses, the ClusterSecretStore, each Secret with its keys) as
"planned". With a Kubernetes API client, `verify()` reads only what it needs, read-only:

- the server version (`/version`) against the Kubernetes minimum;
- each CRD (`apiextensions.k8s.io/v1`) and whether it SERVES the version this repo uses;
- the version of each component: the tag of a workload container whose image name is listed
  (Deployments, DaemonSets, StatefulSets in all namespaces), else the workload's
  `app.kubernetes.io/version` label, else a CRD annotation (Gateway API's bundle-version); the
  highest found must reach the minimum;
- named settings: Alertmanager `alertmanagerConfigMatcherStrategy.type: None` (the rollback route
  matches alerts of every llm-<env> namespace), DCGM exporter `DCGM_EXPORTER_KUBERNETES=true`;
- a StorageClass that serves ReadWriteMany: Kubernetes records no access modes on a StorageClass,
  so it counts when a Bound PVC with ReadWriteMany uses it, or its provisioner is a listed
  file-system CSI driver;
- PriorityClasses, ClusterSecretStores (condition Ready=True), Secrets/ConfigMaps with their keys.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.checks.prerequisites import Component, Need, Prerequisites

PLANNED, MET, MISSING = "planned", "met", "missing"
_VERSION_CHUNK = re.compile(r"v?\d+(\.\d+)*")


@dataclass(frozen=True)
class Item:
    """One line of the plan or of the verification."""

    kind: str  # component | storageclass | priorityclass | secretstore | secret | configmap
    name: str
    minimum: str
    status: str
    detail: str
    install: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def version_key(text: str) -> tuple[int, ...] | None:
    """A version tag as numbers: v3.1.0 → (3, 1, 0); DCGM's 3.3.9-3.6.1-ubuntu22.04 → (3, 3, 9, 3, 6, 1)."""
    nums: list[int] = []
    for chunk in text.split("@")[0].split("-"):
        if not _VERSION_CHUNK.fullmatch(chunk):
            break
        nums += [int(n) for n in chunk.lstrip("v").split(".")]
    return tuple(nums) or None


def at_least(found: str, minimum: str) -> bool:
    have, want = version_key(found), version_key(minimum)
    return have is not None and want is not None and have >= want


def _verify_text(comp: Component) -> str:
    v = comp.verify
    parts = [f"CRD {name} serving {ver}" for name, ver in v.crds]
    if v.images:
        parts.append(f"workload image {'/'.join(v.images)} >= {comp.minimum}")
    if v.bundle_version_annotation:
        parts.append(f"CRD annotation {v.bundle_version_annotation} >= {comp.minimum}")
    parts += [f"setting {c}" for c in v.checks]
    return "; ".join(parts) or f"API server /version >= {comp.minimum}"


def plan(prereqs: Prerequisites) -> list[Item]:
    """Every prerequisite, nothing verified: what to install and what `--kubeconfig` would check."""
    items = [
        Item("component", c.name, c.minimum, PLANNED, f"{c.needed_for}; verify: {_verify_text(c)}", c.install)
        for c in prereqs.all
    ]
    if prereqs.cluster:
        cl = prereqs.cluster
        items.append(Item("storageclass", cl.rwx_access_mode, "", PLANNED, cl.rwx_needed_for, cl.rwx_install))
        items += [Item("priorityclass", n.name, "", PLANNED, n.needed_for, n.install) for n in cl.priority_classes]
        items += [
            Item("secretstore", n.name, "", PLANNED, f"{n.store_kind}, Ready: {n.needed_for}", n.install)
            for n in cl.secret_stores
        ]
    items += [
        Item(
            s.kind.lower(),
            f"{ns}/{s.name}",
            "",
            PLANNED,
            f"keys {', '.join(s.keys)}; {s.needed_for}",
            s.install,
        )
        for s in prereqs.secrets
        for ns in s.namespaces
    ]
    return items


# --- against a cluster -----------------------------------------------------------------------


class Cluster:
    """The few read-only API calls verify() makes, over an authenticated kubernetes.client.ApiClient."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        # Any: the models' Optional fields are checked where it matters (a missing object is a 404).
        self.api = api_client
        self.core: Any = client.CoreV1Api(api_client)
        self.apps: Any = client.AppsV1Api(api_client)
        self.ext: Any = client.ApiextensionsV1Api(api_client)
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.storage: Any = client.StorageV1Api(api_client)
        self.scheduling: Any = client.SchedulingV1Api(api_client)
        self.version: Any = client.VersionApi(api_client)
        self._workloads: list[Any] | None = None

    def workloads(self) -> list[Any]:
        if self._workloads is None:
            self._workloads = [
                *self.apps.list_deployment_for_all_namespaces().items,
                *self.apps.list_daemon_set_for_all_namespaces().items,
                *self.apps.list_stateful_set_for_all_namespaces().items,
            ]
        return self._workloads


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "status", None) == 404


def _image_name(image: str) -> tuple[str, str]:
    """registry/path/name:tag@digest → (name, tag) ('' when pinned by digest only)."""
    ref = image.split("@")[0]
    last = ref.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    return name, tag


def _component_versions(cluster: Cluster, comp: Component) -> tuple[list[str], list[str]]:
    """(versions found, where) for a component's listed images."""
    found, where = [], []
    for wl in cluster.workloads():
        labels = wl.metadata.labels or {}
        for ctr in wl.spec.template.spec.containers or []:
            name, tag = _image_name(ctr.image or "")
            if name not in comp.verify.images:
                continue
            version = tag if version_key(tag) else str(labels.get("app.kubernetes.io/version") or "")
            where.append(f"{type(wl).__name__.removeprefix('V1')} {wl.metadata.namespace}/{wl.metadata.name}")
            if version_key(version):
                found.append(version)
    return found, where


def _containers(cluster: Cluster, image: str) -> Iterable[Any]:
    for wl in cluster.workloads():
        for ctr in wl.spec.template.spec.containers or []:
            if _image_name(ctr.image or "")[0] == image:
                yield ctr


def _alertmanager_matcher_strategy_none(cluster: Cluster) -> str | None:
    ams = cluster.custom.list_cluster_custom_object("monitoring.coreos.com", "v1", "alertmanagers").get("items", [])
    if not ams:
        return "no Alertmanager (monitoring.coreos.com/v1) in the cluster"
    good = [
        a for a in ams if ((a.get("spec") or {}).get("alertmanagerConfigMatcherStrategy") or {}).get("type") == "None"
    ]
    if good:
        return None
    names = ", ".join(f"{a['metadata'].get('namespace')}/{a['metadata']['name']}" for a in ams)
    return (
        f"Alertmanager {names} keeps the default alertmanagerConfigMatcherStrategy OnNamespace: the rollback "
        "controller's AlertmanagerConfig would match only alerts of its own namespace; set spec."
        "alertmanagerConfigMatcherStrategy.type: None"
    )


def _dcgm_kubernetes_mapping(cluster: Cluster) -> str | None:
    ctrs = list(_containers(cluster, "dcgm-exporter"))
    if not ctrs:
        return "no dcgm-exporter container found"
    for ctr in ctrs:
        env = {e.name: e.value for e in ctr.env or []}
        args = [*(ctr.command or []), *(ctr.args or [])]
        if str(env.get("DCGM_EXPORTER_KUBERNETES", "")).lower() == "true" or any(
            a in ("-k", "--kubernetes", "--kubernetes=true") for a in args
        ):
            return None
    return "dcgm-exporter runs without DCGM_EXPORTER_KUBERNETES=true: GPU metrics carry no pod/namespace labels"


SETTING_CHECKS: dict[str, Callable[[Cluster], str | None]] = {
    "alertmanager_matcher_strategy_none": _alertmanager_matcher_strategy_none,
    "dcgm_kubernetes_mapping": _dcgm_kubernetes_mapping,
}


def _verify_component(cluster: Cluster, comp: Component, kubernetes: bool) -> Item:
    def item(status: str, detail: str) -> Item:
        return Item("component", comp.name, comp.minimum, status, detail, comp.install)

    if kubernetes:
        git_version = str(cluster.version.get_code().git_version)
        ok = at_least(git_version, comp.minimum)
        return item(MET if ok else MISSING, f"API server {git_version}" + ("" if ok else f" < {comp.minimum}"))
    problems, seen = [], []
    annotated: list[str] = []
    for name, version in comp.verify.crds:
        try:
            crd = cluster.ext.read_custom_resource_definition(name)
        except Exception as exc:
            if not _not_found(exc):
                raise
            problems.append(f"CRD {name} not installed")
            continue
        served = [v.name for v in crd.spec.versions if v.served]
        if version not in served:
            problems.append(f"CRD {name} serves {', '.join(served) or 'nothing'}, not {version}")
        if comp.verify.bundle_version_annotation:
            value = (crd.metadata.annotations or {}).get(comp.verify.bundle_version_annotation)
            if value:
                annotated.append(value)
    seen += [f"{len(comp.verify.crds)} CRDs"] if comp.verify.crds else []
    versions = annotated
    if comp.verify.images:
        found, where = _component_versions(cluster, comp)
        versions = versions + found
        if not where:
            problems.append(f"no workload runs image {'/'.join(comp.verify.images)}")
        seen += where[:3]
    if comp.verify.images or comp.verify.bundle_version_annotation:
        best = max(versions, key=lambda v: version_key(v) or (), default="")
        if not best and not problems:
            problems.append("version not determinable (image by digest only, no app.kubernetes.io/version label)")
        elif best and not at_least(best, comp.minimum):
            problems.append(f"version {best} < {comp.minimum}")
        elif best:
            seen.append(f"version {best}")
    for check in comp.verify.checks:
        problem = SETTING_CHECKS[check](cluster)
        if problem:
            problems.append(problem)
    if problems:
        return item(MISSING, "; ".join(problems))
    return item(MET, ", ".join(seen))


def _verify_storage(cluster: Cluster, prereqs: Prerequisites) -> Item:
    assert prereqs.cluster is not None
    cl = prereqs.cluster
    classes = cluster.storage.list_storage_class().items
    pvcs = cluster.core.list_persistent_volume_claim_for_all_namespaces().items
    proven = {
        p.spec.storage_class_name
        for p in pvcs
        if cl.rwx_access_mode in (p.spec.access_modes or []) and (p.status and p.status.phase == "Bound")
    }
    rwx = []
    for sc in classes:
        if sc.metadata.name in proven:
            rwx.append(f"{sc.metadata.name} (a Bound {cl.rwx_access_mode} PVC uses it)")
        elif sc.provisioner in cl.rwx_provisioners:
            rwx.append(f"{sc.metadata.name} (provisioner {sc.provisioner})")
    if rwx:
        return Item("storageclass", cl.rwx_access_mode, "", MET, "; ".join(rwx), cl.rwx_install)
    have = ", ".join(f"{sc.metadata.name} ({sc.provisioner})" for sc in classes) or "none"
    return Item(
        "storageclass",
        cl.rwx_access_mode,
        "",
        MISSING,
        f"no StorageClass known to serve {cl.rwx_access_mode} (classes: {have}; neither a Bound {cl.rwx_access_mode} "
        f"PVC uses one nor is its provisioner one of {', '.join(cl.rwx_provisioners)})",
        cl.rwx_install,
    )


def _read(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def _verify_need(cluster: Cluster, need: Need) -> list[Item]:
    if need.kind == "PriorityClass":
        obj = _read(lambda: cluster.scheduling.read_priority_class(need.name))
        status = MET if obj else MISSING
        detail = f"value {obj.value}" if obj else f"PriorityClass {need.name} not found"
        return [Item("priorityclass", need.name, "", status, detail, need.install)]
    if need.kind == "SecretStore":
        obj = _read(
            lambda: cluster.custom.get_cluster_custom_object(
                "external-secrets.io", "v1", "clustersecretstores", need.name
            )
        )
        if obj is None:
            return [
                Item("secretstore", need.name, "", MISSING, f"ClusterSecretStore {need.name} not found", need.install)
            ]
        ready = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
        if ready and ready[0].get("status") == "True":
            return [Item("secretstore", need.name, "", MET, "Ready", need.install)]
        why = ready[0].get("message") if ready else "no Ready condition"
        return [
            Item(
                "secretstore", need.name, "", MISSING, f"ClusterSecretStore {need.name} not Ready: {why}", need.install
            )
        ]
    items = []
    for ns in need.namespaces:
        read = (
            cluster.core.read_namespaced_config_map if need.kind == "ConfigMap" else cluster.core.read_namespaced_secret
        )
        obj = _read(functools.partial(read, need.name, ns))
        name = f"{ns}/{need.name}"
        if obj is None:
            items.append(Item(need.kind.lower(), name, "", MISSING, f"{need.kind} not found", need.install))
            continue
        keys = set((obj.data or {}).keys()) | set((getattr(obj, "string_data", None) or {}).keys())
        labels = obj.metadata.labels or {}
        problems = [f"no key {k}" for k in need.keys if k not in keys]
        problems += [f"label {k}={v} missing" for k, v in need.labels if labels.get(k) != v]
        status = MISSING if problems else MET
        detail = "; ".join(problems) if problems else f"keys {', '.join(need.keys)}"
        items.append(Item(need.kind.lower(), name, "", status, detail, need.install))
    return items


def verify(prereqs: Prerequisites, cluster: Cluster) -> list[Item]:
    """Each prerequisite met or missing (with what is wrong), read from the cluster."""
    items = [_verify_component(cluster, c, c is prereqs.kubernetes) for c in prereqs.all]
    if prereqs.cluster:
        items.append(_verify_storage(cluster, prereqs))
        for need in (*prereqs.cluster.priority_classes, *prereqs.cluster.secret_stores):
            items += _verify_need(cluster, need)
    for need in prereqs.secrets:
        items += _verify_need(cluster, need)
    return items


def unknown_checks(prereqs: Prerequisites) -> list[str]:
    """Setting checks named in the file that this module does not implement."""
    return [f"{c.name}: {check}" for c in prereqs.all for check in c.verify.checks if check not in SETTING_CHECKS]


def summary(items: Iterable[Mapping[str, str] | Item]) -> tuple[int, int]:
    rows = [i.as_dict() if isinstance(i, Item) else i for i in items]
    return sum(r["status"] == MET for r in rows), sum(r["status"] == MISSING for r in rows)
