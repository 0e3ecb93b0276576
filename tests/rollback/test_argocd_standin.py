"""The Argo CD stand-in is at least as strict as argocd-server: each row names the upstream rule it mirrors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from ruamel.yaml import YAML

from pipeline.gitops.argocd_standin import (
    App,
    ArgoCDStandIn,
    GoDecodeError,
    Project,
    decode_sync_request,
)
from pipeline.runtime.tools import REPO_ROOT

ARGOCD = REPO_ROOT / "environments" / "argocd"
SATURDAY = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
WEDNESDAY = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        # encoding/json: a JSON string never decodes into int64 ([]int64 sourcePositions).
        (b'{"sourcePositions": ["1"]}', "cannot unmarshal string into Go struct field "),
        # ... nor a number with a fraction.
        (b'{"sourcePositions": [1.0]}', "cannot unmarshal number 1.0 into Go struct field"),
        (b'{"prune": "false"}', "ApplicationSyncRequest.prune of type bool"),
        (b'{"revisions": "abc"}', "ApplicationSyncRequest.revisions of type []string"),
        (b'{"retryStrategy": {"limit": "5"}}', "of type int64"),
        (b"[1]", "cannot unmarshal array into Go value of type ApplicationSyncRequest"),
    ],
)
def test_bodies_go_refuses(body: bytes, error: str) -> None:
    with pytest.raises(GoDecodeError, match=error.replace("[", r"\[").replace("]", r"\]")):
        decode_sync_request(body)


def test_what_go_accepts_unknown_fields_ignored_names_case_insensitive_null_zero() -> None:
    got = decode_sync_request(b'{"PRUNE": true, "sourcepositions": [2], "nonsense": {"x": 1}, "revision": null}')
    assert got == {"prune": True, "sourcePositions": [2], "revision": None}


def policy(line: str) -> dict[str, Any]:
    return {"metadata": {"name": "llm-service"}, "spec": {"roles": [{"name": "ci", "policies": [line]}]}}


@pytest.mark.parametrize(
    "line",
    [
        # validatePolicy (v1alpha1/types.go): objects of another project are refused ...
        "p, proj:llm-service:ci, applications, sync, llm-platform/llm-platform-root, allow",
        # ... as is another subject, a resource outside the project-scoped ones, and a bad effect.
        "p, proj:other:ci, applications, sync, llm-service/*, allow",
        "p, proj:llm-service:ci, projects, get, llm-service/*, allow",
        "p, proj:llm-service:ci, applications, sync, llm-service/*, maybe",
    ],
)
def test_appproject_policies_are_validated_as_argo_cd_does(line: str) -> None:
    with pytest.raises(ValueError, match="invalid policy rule"):
        Project.from_doc(policy(line))


def test_the_repos_appprojects_are_valid_and_grant_only_what_the_controller_needs() -> None:
    docs = [YAML(typ="safe").load(p.read_text()) for p in sorted(ARGOCD.glob("appproject-*.yaml"))]
    projects = {p.name: p for p in map(Project.from_doc, docs)}
    svc, root = projects["llm-service"], projects["llm-platform"]
    sub = "proj:llm-service:rollback-controller"
    assert svc.allows(sub, "applications", "sync", "llm-service/llm-service-prod")
    assert not svc.allows(sub, "applications", "override", "llm-service/llm-service-prod")
    assert not svc.allows(sub, "applications", "delete", "llm-service/llm-service-prod")
    assert root.allows(
        "proj:llm-platform:rollback-controller", "applications", "sync", "llm-platform/llm-platform-root"
    )


def test_a_project_token_never_acts_in_another_project() -> None:
    docs = [YAML(typ="safe").load(p.read_text()) for p in sorted(ARGOCD.glob("appproject-*.yaml"))]
    fake = ArgoCDStandIn(projects={p.name: p for p in map(Project.from_doc, docs)}, now=lambda: WEDNESDAY)
    fake.add_app(App("llm-platform-root", "llm-platform", [{"repoURL": "r", "targetRevision": "main"}]))
    token = fake.issue_token("llm-service", "rollback-controller")
    status, body = fake.handle("POST", "/api/v1/applications/llm-platform-root/sync", f"Bearer {token}", b"{}")
    # getAppEnforceRBAC without a project: 403 "permission denied", the same as for an unknown app.
    assert (status, body["code"], body["message"]) == (403, 7, "permission denied")
    status, body = fake.handle("POST", "/api/v1/applications/nope/sync", f"Bearer {token}", b"{}")
    assert (status, body["message"]) == (403, "permission denied")
    status, body = fake.handle("GET", "/api/v1/applications/nope", "Bearer wrong", b"")
    assert (status, body["code"]) == (401, 16)


def test_windows_are_checked_before_sync_rbac() -> None:
    """Server.Sync: get → CanSync(true) → sync: a caller without `sync` inside a manual-deny window
    hears about the window."""
    deny = {"kind": "deny", "schedule": "0 18 * * 5", "duration": "60h", "applications": ["*"], "manualSync": False}
    doc = policy("p, proj:llm-service:ci, applications, get, llm-service/*, allow")
    doc["spec"]["syncWindows"] = [deny]
    fake = ArgoCDStandIn(projects={"llm-service": Project.from_doc(doc)}, now=lambda: SATURDAY)
    fake.add_app(App("llm-service-prod", "llm-service", [{"repoURL": "r", "targetRevision": "main"}]))
    token = fake.issue_token("llm-service", "ci")
    status, body = fake.handle("POST", "/api/v1/applications/llm-service-prod/sync", f"Bearer {token}", b"{}")
    assert (status, body["message"]) == (403, "cannot sync: blocked by sync window")
    fake.now = lambda: WEDNESDAY
    status, body = fake.handle("POST", "/api/v1/applications/llm-service-prod/sync", f"Bearer {token}", b"{}")
    assert status == 403 and body["message"].startswith("permission denied: applications, sync, llm-service/")


def test_a_position_out_of_range_is_an_untyped_error_and_a_busy_app_a_precondition() -> None:
    doc = policy("p, proj:llm-service:ci, applications, *, llm-service/*, allow")
    fake = ArgoCDStandIn(projects={"llm-service": Project.from_doc(doc)}, now=lambda: WEDNESDAY)
    fake.add_app(App("a", "llm-service", [{"targetRevision": "1.0.0", "chart": "c"}, {"targetRevision": "main"}]))
    token = fake.issue_token("llm-service", "ci")
    status, body = fake.handle(
        "POST", "/api/v1/applications/a/sync", f"Bearer {token}", b'{"sourcePositions": [3], "revisions": ["x"]}'
    )
    assert (status, body["code"], body["message"]) == (500, 2, "source position is out of range")
    fake.apps["a"].operation = {"sync": {}}
    status, body = fake.handle("POST", "/api/v1/applications/a/sync", f"Bearer {token}", b"{}")
    assert (status, body["code"], body["message"]) == (400, 9, "another operation is already in progress")


def test_local_manifests_need_override_and_are_refused_on_an_automated_app() -> None:
    """Server.Sync: `manifests` (a local sync) needs `override`; on an automated app it is refused."""
    doc = policy("p, proj:llm-service:ci, applications, *, llm-service/*, allow")
    fake = ArgoCDStandIn(projects={"llm-service": Project.from_doc(doc)}, now=lambda: WEDNESDAY)
    fake.add_app(App("a", "llm-service", [{"targetRevision": "main"}]))
    token = fake.issue_token("llm-service", "ci")
    status, body = fake.handle("POST", "/api/v1/applications/a/sync", f"Bearer {token}", b'{"manifests": ["x"]}')
    assert (status, body["code"]) == (400, 9) and "cannot use local sync" in body["message"]
    # server/server.go getToken: only the exact "Bearer " prefix carries a token.
    status, body = fake.handle("POST", "/api/v1/applications/a/sync", f"bearer {token}", b"{}")
    assert (status, body["code"]) == (401, 16)
    # A null position decodes to int64 0 (Go's zero value): out of range, not a crash.
    status, body = fake.handle(
        "POST", "/api/v1/applications/a/sync", f"Bearer {token}", b'{"sourcePositions": [null], "revisions": ["x"]}'
    )
    assert (status, body["message"]) == (500, "source position is out of range")


def test_bare_action_names_argo_cd_does_not_know_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid action 'invoke'"):
        Project.from_doc(policy("p, proj:llm-service:ci, applications, invoke, llm-service/*, allow"))
    assert Project.from_doc(policy("p, proj:llm-service:ci, applications, action/restart, llm-service/*, allow"))


def _tree_stand_in() -> tuple[ArgoCDStandIn, str]:
    docs = [
        policy("p, proj:llm-service:ci, applications, get, llm-service/*, allow"),
        {"metadata": {"name": "other"}, "spec": {"roles": []}},
    ]
    fake = ArgoCDStandIn(projects={d["metadata"]["name"]: Project.from_doc(d) for d in docs}, now=lambda: WEDNESDAY)
    fake.add_app(App("llm-service-staging", "llm-service", [{"repoURL": "r", "targetRevision": "main"}]))
    fake.add_app(App("elsewhere", "other", [{"repoURL": "r", "targetRevision": "main"}]))
    return fake, f"Bearer {fake.issue_token('llm-service', 'ci')}"


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        # getAppEnforceRBAC with `project`: the first check is on the named project → 403.
        ("?project=other", 403, "permission denied"),
        # The app's own project and argocd-server's namespace, named explicitly: served.
        ("?project=llm-service&appNamespace=argocd", 200, None),
        # isNamespaceEnabled: only argocd-server's own namespace; NamespaceNotPermittedError is 403.
        ("?appNamespace=llm-staging", 403, "permission denied"),
        ("?appNamespace=llm-staging&project=llm-service", 403, "permission denied"),
    ],
)
def test_resource_tree_honours_project_and_app_namespace_as_get_app_enforce_rbac(
    query: str, status: int, message: str | None
) -> None:
    fake, auth = _tree_stand_in()
    got, body = fake.handle("GET", f"/api/v1/applications/llm-service-staging/resource-tree{query}", auth, b"")
    assert got == status, body
    if message is not None:
        assert body["message"] == message


def test_resource_tree_of_an_unknown_or_foreign_app_is_404_with_a_project_and_403_without() -> None:
    fake, auth = _tree_stand_in()
    for name in ("nope", "elsewhere"):
        got, body = fake.handle("GET", f"/api/v1/applications/{name}/resource-tree?project=llm-service", auth, b"")
        assert (got, body["code"], body["message"]) == (404, 5, f'applications.argoproj.io "{name}" not found')
        got, body = fake.handle("GET", f"/api/v1/applications/{name}/resource-tree", auth, b"")
        assert (got, body["message"]) == (403, "permission denied")


def test_resource_tree_json_leaves_empty_fields_out_as_encoding_json_omitempty() -> None:
    fake, auth = _tree_stand_in()
    path = "/api/v1/applications/llm-service-staging/resource-tree"
    assert fake.handle("GET", path, auth, b"") == (200, {})  # ApplicationTree.Nodes omitempty
    healthy = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "llm-service", "namespace": "llm-staging", "generation": 1},
        "spec": {"replicas": 1, "strategy": {"canary": {}}},
        "status": {"observedGeneration": "1", "phase": "Healthy"},
    }
    fake.apps["llm-service-staging"].live = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "llm-staging"}},
        healthy,
    ]
    _, tree = fake.handle("GET", path, auth, b"")
    # A core, cluster-scoped object: no `group`, no `namespace`; Healthy has no `message` (HealthStatus omitempty).
    assert tree["nodes"] == [
        {"version": "v1", "kind": "Namespace", "name": "llm-staging"},
        {
            "group": "argoproj.io",
            "version": "v1alpha1",
            "kind": "Rollout",
            "namespace": "llm-staging",
            "name": "llm-service",
            "health": {"status": "Healthy"},
        },
    ]
