"""`python -m pipeline bootstrap --check`: the offline plan, and the verification against a cluster (the
kube-apiserver stand-in of tests/bootstrap/kube_apiserver.py), with its exit codes."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipeline.checks import prerequisites
from pipeline.runtime.tools import require
from tests.bootstrap.kube_apiserver import KubeAPIServer, kubeconfig

REPO = Path(__file__).resolve().parents[2]
TOKEN = "bootstrap-test-token"
PREREQS = prerequisites.load(REPO / prerequisites.PREREQUISITES)
# Kinds of the custom resources the check reads (a CRD's names.kind).
KINDS = {"clustersecretstores": "ClusterSecretStore", "alertmanagers": "Alertmanager"}


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "bootstrap", *argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **extra}
    if namespace:
        meta["namespace"] = namespace
    return meta


def crd(name: str, version: str, kind: str | None = None, scope: str = "Namespaced", **meta: Any) -> dict[str, Any]:
    plural, group = name.split(".", 1)
    kind = kind or KINDS.get(plural, plural.rstrip("s").capitalize())
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": _meta(name, **meta),
        "spec": {
            "group": group,
            "names": {"plural": plural, "kind": kind},
            "scope": scope,
            "versions": [{"name": version, "served": True, "storage": True}],
        },
    }


def workload(kind: str, name: str, image: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": _meta(name, "platform"), "spec": spec}


def complete_cluster() -> list[dict[str, Any]]:
    """A cluster that has every prerequisite of policies/prerequisites.yaml at its minimum version."""
    objs: list[dict[str, Any]] = []
    for comp in PREREQS.components:
        for name, version in comp.verify.crds:
            extra = {}
            if comp.verify.bundle_version_annotation:
                extra["annotations"] = {comp.verify.bundle_version_annotation: comp.minimum}
            objs.append(crd(name, version, **extra))
        for image in comp.verify.images:
            kind = "DaemonSet" if image == "dcgm-exporter" else "Deployment"
            env = {"DCGM_EXPORTER_KUBERNETES": "true"} if image == "dcgm-exporter" else None
            objs.append(workload(kind, image, f"registry.invalid/vendor/{image}:{comp.minimum}", env))
    objs.append(crd("alertmanagers.monitoring.coreos.com", "v1", kind="Alertmanager"))
    objs.append(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "Alertmanager",
            "metadata": _meta("main", "monitoring"),
            "spec": {"alertmanagerConfigMatcherStrategy": {"type": "None"}},
        }
    )
    assert PREREQS.cluster is not None
    for store in PREREQS.cluster.secret_stores:
        objs.append(
            {
                "apiVersion": "external-secrets.io/v1",
                "kind": "ClusterSecretStore",
                "metadata": _meta(store.name),
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
        )
    objs[[o["metadata"]["name"] for o in objs].index("clustersecretstores.external-secrets.io")]["spec"]["scope"] = (
        "Cluster"
    )
    objs.append(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": _meta("shared"),
            "provisioner": "nfs.csi.k8s.io",
        }
    )
    objs.append(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": _meta("ssd"),
            "provisioner": "pd.csi.storage.gke.io",
        }
    )
    for pc in PREREQS.cluster.priority_classes:
        objs.append(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": _meta(pc.name),
                "value": 1000000,
            }
        )
    for need in PREREQS.secrets:
        for ns in need.namespaces:
            objs.append(
                {
                    "apiVersion": "v1",
                    "kind": need.kind,
                    "metadata": _meta(need.name, ns, labels=dict(need.labels)),
                    "data": {k: "eA==" for k in need.keys},
                }
            )
    return objs


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[KubeAPIServer, Path]]:
    server = KubeAPIServer(complete_cluster(), TOKEN)
    with server.serve():
        config = tmp_path / "kubeconfig"
        config.write_text(kubeconfig(server.url, TOKEN))
        yield server, config


def check(config: Path) -> tuple[int, dict[str, Any]]:
    proc = run("--check", "--kubeconfig", str(config), "-o", "json")
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {"stderr": proc.stderr}


def test_offline_plan_lists_every_prerequisite_with_minimum_and_install() -> None:
    proc = run("--check", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["mode"] == "plan" and doc["missing"] == []
    items = {(i["kind"], i["name"]): i for i in doc["items"]}
    for name, minimum in [
        ("Argo CD", "v3.1.0"),
        ("prometheus-operator", "v0.82.0"),
        ("Gateway API (standard channel CRDs)", "v1.2.0"),
        ("KEDA", "v2.15.0"),
        ("Vertical Pod Autoscaler", "0.12.0"),
        ("External Secrets Operator", "v0.16.0"),
        ("trivy-operator", "v0.1.6"),
        ("DCGM exporter", "2.3.1-2.6.0"),
        ("Redis", "4.0.0"),
    ]:
        item = items[("component", name)]
        assert item["minimum"] == minimum and item["status"] == "planned" and item["install"]
    assert "alertmanager_matcher_strategy_none" in items[("component", "prometheus-operator")]["detail"]
    assert "dcgm_kubernetes_mapping" in items[("component", "DCGM exporter")]["detail"]
    assert ("storageclass", "ReadWriteMany") in items
    assert ("priorityclass", "llm-serving") in items and ("secretstore", "platform-secrets") in items
    for ns in ("llm-dev", "llm-staging", "llm-prod"):
        assert ("secret", f"{ns}/hf-token") in items and ("secret", f"{ns}/llm-service-gateway") in items
    controller = items[("secret", "llm-rollback/rollback-controller")]["detail"]
    assert "token, ssh-privatekey, known_hosts, argocd-token" in controller
    assert "argocd repo add" in items[("secret", "argocd/repo-llm-charts")]["install"]
    # The human view on stdout, the note on stderr.
    table = run("--check")
    assert table.returncode == 0 and "Argo CD" in table.stdout and "v3.1.0" in table.stdout
    assert "printing the plan" in table.stderr and "printing the plan" not in table.stdout


def test_complete_cluster_meets_everything(cluster: tuple[KubeAPIServer, Path]) -> None:
    server, config = cluster
    code, doc = check(config)
    assert (code, doc["missing"]) == (0, []), doc
    assert doc["mode"] == "cluster" and doc["met"] == len(doc["items"])
    items = {(i["kind"], i["name"]): i for i in doc["items"]}
    assert "shared (provisioner nfs.csi.k8s.io)" in items[("storageclass", "ReadWriteMany")]["detail"]
    assert "version v1.2.0" in items[("component", "Gateway API (standard channel CRDs)")]["detail"]
    assert items[("secretstore", "platform-secrets")]["detail"] == "Ready"
    assert items[("secret", "argocd/repo-llm-charts")]["status"] == "met"
    # Read-only: every request the check made was a GET.
    assert {m for m, _, _ in server.requests} == {"GET"}


def test_missing_prerequisites_are_named_and_exit_1(cluster: tuple[KubeAPIServer, Path]) -> None:
    server, config = cluster
    objs: list[dict[str, Any]] = copy.deepcopy(list(server.objects))

    def drop(kind: str, name: str, ns: str | None = None) -> None:
        objs[:] = [
            o
            for o in objs
            if not (o["kind"] == kind and o["metadata"]["name"] == name and o["metadata"].get("namespace") == ns)
        ]

    def find(kind: str, name: str) -> dict[str, Any]:
        return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)

    drop("Secret", "hf-token", "llm-dev")
    find("Secret", "rollback-controller")["data"].pop("argocd-token")
    find("Deployment", "argocd")["spec"]["template"]["spec"]["containers"][0]["image"] = (
        "quay.io/argoproj/argocd:v3.0.23"
    )
    find("Alertmanager", "main")["spec"] = {}
    find("DaemonSet", "dcgm-exporter")["spec"]["template"]["spec"]["containers"][0]["env"] = []
    find("CustomResourceDefinition", "externalsecrets.external-secrets.io")["spec"]["versions"][0]["name"] = "v1beta1"
    find("StorageClass", "shared")["provisioner"] = "ebs.csi.aws.com"
    drop("PriorityClass", "llm-serving")
    find("ClusterSecretStore", "platform-secrets")["status"]["conditions"][0] |= {"status": "False", "message": "auth"}
    server.objects = objs
    code, doc = check(config)
    assert code == 1, doc
    assert sorted(doc["missing"]) == sorted(
        [
            "component Argo CD",
            "component prometheus-operator",
            "component DCGM exporter",
            "component External Secrets Operator",
            "storageclass ReadWriteMany",
            "priorityclass llm-serving",
            "secretstore platform-secrets",
            "secret llm-dev/hf-token",
            "secret llm-rollback/rollback-controller",
        ]
    )
    details = {f"{i['kind']} {i['name']}": i["detail"] for i in doc["items"]}
    assert "version v3.0.23 < v3.1.0" in details["component Argo CD"]
    assert "alertmanagerConfigMatcherStrategy.type: None" in details["component prometheus-operator"]
    assert "DCGM_EXPORTER_KUBERNETES=true" in details["component DCGM exporter"]
    assert "serves v1beta1, not v1" in details["component External Secrets Operator"]
    assert "no key argocd-token" in details["secret llm-rollback/rollback-controller"]
    assert "not Ready: auth" in details["secretstore platform-secrets"]
    assert "ebs.csi.aws.com" in details["storageclass ReadWriteMany"]
    assert doc["summary"].startswith("9 of ")


def test_a_bound_rwx_claim_proves_its_class(cluster: tuple[KubeAPIServer, Path]) -> None:
    server, config = cluster
    objs = [o for o in server.objects if o["kind"] != "StorageClass"]
    objs.append(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": _meta("files"),
            "provisioner": "example.com/in-house",
        }
    )
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta("cache", "llm-prod"),
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "files"},
            "status": {"phase": "Bound"},
        }
    )
    server.objects = objs
    code, doc = check(config)
    assert code == 0, doc["missing"]
    (item,) = [i for i in doc["items"] if i["kind"] == "storageclass"]
    assert item["detail"] == "files (a Bound ReadWriteMany PVC uses it)"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run().returncode == 2  # --check is required
    proc = run("--check", "--kubeconfig", str(tmp_path / "absent"))
    assert proc.returncode == 2 and "no such file" in proc.stderr and not proc.stdout


def test_cluster_refusing_the_credentials_is_an_error(cluster: tuple[KubeAPIServer, Path], tmp_path: Path) -> None:
    server, _ = cluster
    config = tmp_path / "wrong"
    config.write_text(kubeconfig(server.url, "wrong-token"))
    code, doc = check(config)
    assert code == 3 and "401" in json.dumps(doc)


def test_stand_in_is_strict(cluster: tuple[KubeAPIServer, Path]) -> None:
    server, _ = cluster
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{server.url}/api/v1/namespaces/llm-dev/secrets", headers=auth).status_code == 405
    assert httpx.get(f"{server.url}/api/v1/namespaces/llm-dev/secrets/hf-token").status_code == 401
    missing = httpx.get(f"{server.url}/api/v1/namespaces/llm-dev/secrets/nope", headers=auth)
    assert missing.status_code == 404 and missing.json()["message"] == 'secrets "nope" not found'
    # A custom resource at a version its CRD does not serve is no route at all.
    assert (
        httpx.get(
            f"{server.url}/apis/external-secrets.io/v1beta1/clustersecretstores/platform-secrets", headers=auth
        ).status_code
        == 404
    )
    assert (
        httpx.get(
            f"{server.url}/apis/external-secrets.io/v1/clustersecretstores/platform-secrets", headers=auth
        ).status_code
        == 200
    )


def _rendered_refs(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(namespace, Secret, key) every pod template reads through secretKeyRef or a secret volume (key "*")."""
    refs = set()
    for d in docs:
        pod = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
        ns = d["metadata"].get("namespace", "")
        for ctr in pod.get("containers", []) + pod.get("initContainers", []):
            for env in ctr.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.add((ns, ref["name"], ref["key"]))
        for vol in pod.get("volumes") or []:
            if "secret" in vol:
                for item in vol["secret"].get("items") or [{"key": "*"}]:
                    refs.add((ns, vol["secret"]["secretName"], item["key"]))
    return refs


@pytest.mark.slow
def test_every_secret_the_charts_read_is_listed(tmp_path: Path) -> None:
    """The list in policies/prerequisites.yaml is what the rendered charts actually read (not a guess)."""
    from pipeline.artifacts import chart_render

    listed = {(ns, s.name): set(s.keys) for s in PREREQS.secrets if s.kind == "Secret" for ns in s.namespaces}
    refs: set[tuple[str, str, str]] = set()
    for env in ("dev", "staging", "prod"):
        docs = [d for d in yaml.safe_load_all(chart_render.helm_template(REPO, env)) if d]
        refs |= {(ns or f"llm-{env}", name, key) for ns, name, key in _rendered_refs(docs)}
    helm = require("helm")
    out = subprocess.run(
        [
            helm,
            "template",
            "rollback-controller",
            "charts/rollback-controller",
            "-n",
            "llm-rollback",
            "-f",
            "environments/argocd/rollback-controller-values.yaml",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    refs |= {("llm-rollback", n, k) for _, n, k in _rendered_refs([d for d in yaml.safe_load_all(out.stdout) if d])}
    assert refs, "nothing rendered reads a Secret"
    unlisted = sorted(r for r in refs if (r[0], r[1]) not in listed)
    assert unlisted == []
    missing_keys = sorted(r for r in refs if r[2] != "*" and r[2] not in listed[(r[0], r[1])])
    assert missing_keys == []


def _grants_for(requests: list[tuple[str, str, int]]) -> set[tuple[str, str, str, str | None]]:
    """The least RBAC grants that cover `requests` (as a read-only checker role would list them)."""
    grants: set[tuple[str, str, str, str | None]] = set()
    for _method, path, _code in requests:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts[:1] not in (["api"], ["apis"]) or len(parts) < 3:
            continue
        group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        ns = None
        if rest[:1] == ["namespaces"]:
            ns, rest = rest[1], rest[2:]
        grants.add(("get" if len(rest) == 2 else "list", group, rest[0], ns))
    return grants


def test_a_token_without_a_grant_is_forbidden_and_the_check_says_so(
    cluster: tuple[KubeAPIServer, Path], tmp_path: Path
) -> None:
    server, config = cluster
    assert check(config)[0] == 0
    needed = _grants_for(server.requests)
    assert ("get", "", "secrets", "llm-prod") in needed
    # The checker role as granted: everything it reads except the prod namespace's Secrets.
    server.grants = needed - {g for g in needed if g[2] == "secrets" and g[3] == "llm-prod"}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    denied = httpx.get(f"{server.url}/api/v1/namespaces/llm-prod/secrets/does-not-exist", headers=auth)
    # RBAC answers before the object is looked up: 403, not 404.
    assert denied.status_code == 403 and denied.json()["reason"] == "Forbidden"
    assert denied.json()["message"].startswith('secrets "does-not-exist" is forbidden: User ')
    code, doc = check(config)
    assert code == 3 and "403" in json.dumps(doc)
