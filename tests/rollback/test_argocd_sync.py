"""Rollbacks reach the cluster at any hour (issue #13 item 1): the controller requests the sync
through Argo CD's API (tested against a server implementing its documented contract), the prod deny
windows allow manual syncs, and where a rollback can still wait the result and `status` say so."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ruamel.yaml import YAML

from pipeline.commands import status
from pipeline.controller import ControllerConfig, create_app
from pipeline.gitops.argocd_pin import pinned_revision
from pipeline.gitops.argocd_sync import ArgoCDConfig, request_sync
from pipeline.gitops.release import Release
from pipeline.gitops.repo import ensure_local_remote
from pipeline.runtime.tools import REPO_ROOT
from tests.promotion.conftest import clone, write_envs
from tests.rollback.argocd_contract import FakeArgoCD, serve
from tests.rollback.conftest import TOKEN, alert_payload, to_prod

AUTH = {"Authorization": f"Bearer {TOKEN}"}
APPPROJECT = REPO_ROOT / "environments" / "argocd" / "appproject-llm-service.yaml"
# Saturday noon UTC: inside the prod weekend deny window (Fri 18:00 → Mon 06:00).
SATURDAY = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
ARGO_TOKEN = "argocd-project-role-jwt-not-a-secret"


def windows(text: str) -> list[dict[str, Any]]:
    return list(YAML(typ="safe").load(text)["spec"]["syncWindows"])


def without_manual_sync(text: str) -> str:
    return text.replace("manualSync: true", "manualSync: false")


# One prod history per AppProject variant, built once and copied per test (six promotions each).
_PROD_REMOTES: dict[str, Path] = {}


@pytest.fixture
def prod_v1_v2(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    make_release: Callable[..., Release],
    request: pytest.FixtureRequest,
) -> str:
    """A GitOps remote with the real AppProject (or a variant), v1 then v2 promoted into prod (a weekday)."""
    project = getattr(request, "param", APPPROJECT.read_text())
    if project not in _PROD_REMOTES:
        base = tmp_path_factory.mktemp("prod-history")
        remote = ensure_local_remote(base / "remote" / "gitops.git", write_envs(base / "src", project))
        for n in (1, 2):
            to_prod(str(remote), base, make_release(n, images_built=False), n)
        _PROD_REMOTES[project] = remote
    copy = tmp_path / "remote" / "gitops.git"
    shutil.copytree(_PROD_REMOTES[project], copy)
    return str(copy)


@pytest.fixture
def argocd(tmp_path: Path) -> Iterator[FakeArgoCD]:
    fake = FakeArgoCD(token=ARGO_TOKEN, windows=windows(APPPROJECT.read_text()), now=lambda: SATURDAY)
    for name in ("llm-service-dev", "llm-service-staging", "llm-service-prod"):
        fake.add_app(name)
    fake.add_app("llm-platform-root", sources=1, project="llm-platform")
    with serve(fake):
        yield fake


def argo_cfg(fake: FakeArgoCD, tmp_path: Path, token: str = ARGO_TOKEN) -> ArgoCDConfig:
    path = tmp_path / "argocd-token"
    path.write_text(token + "\n")
    return ArgoCDConfig(server=fake.url, token_file=path)


def controller(remote: str, tmp_path: Path, argocd: ArgoCDConfig | None) -> TestClient:
    cfg = ControllerConfig(
        gitops_repo=remote, work_root=tmp_path / "ctl", bearer_token=TOKEN, argocd=argocd, clock=lambda: SATURDAY
    )
    return TestClient(create_app(cfg))


def fire(client: TestClient) -> dict[str, Any]:
    resp = client.post("/webhook", json=alert_payload(env="prod"), headers=AUTH)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()["results"][0]
    return result


def test_appproject_deny_windows_allow_manual_sync() -> None:
    prod = [w for w in windows(APPPROJECT.read_text()) if w["kind"] == "deny"]
    assert prod and all(w.get("manualSync") is True for w in prod)


def test_weekend_rollback_requests_the_sync_and_argo_cd_accepts_it(
    prod_v1_v2: str, argocd: FakeArgoCD, tmp_path: Path
) -> None:
    with controller(prod_v1_v2, tmp_path, argo_cfg(argocd, tmp_path)) as client:
        result = fire(client)
    assert result["outcome"] == "rolled_back", result
    assert result["sync"]["state"] == "requested", result["sync"]
    pin = pinned_revision(clone(prod_v1_v2, tmp_path, "after"), "prod")
    assert result["sync"]["revision"] == pin
    # Root app first (it applies the moved prod pin), then the prod app at exactly the rollback's sources.
    paths = [r["path"] for r in argocd.requests if r["method"] == "POST"]
    assert paths == ["/api/v1/applications/llm-platform-root/sync", "/api/v1/applications/llm-service-prod/sync"]
    body = argocd.syncs("llm-service-prod")[0]
    assert body["revisions"] == ["0.1.0", pin] and body["sourcePositions"] == ["1", "2"]
    assert body["prune"] is False and body["dryRun"] is False
    assert all(r["auth"] == f"Bearer {ARGO_TOKEN}" for r in argocd.requests)


@pytest.mark.parametrize("prod_v1_v2", [without_manual_sync(APPPROJECT.read_text())], indirect=True)
def test_a_window_that_denies_manual_sync_is_reported_not_hidden(
    prod_v1_v2: str, argocd: FakeArgoCD, tmp_path: Path
) -> None:
    argocd.windows = windows(without_manual_sync(APPPROJECT.read_text()))
    with controller(prod_v1_v2, tmp_path, argo_cfg(argocd, tmp_path)) as client:
        result = fire(client)
    assert result["outcome"] == "rolled_back"
    assert result["sync"]["state"] == "held"
    assert (
        "reverted in git, not yet synced: deny '0 18 * * 5' for 60h (UTC) until Mon 2026-12-07 06:00 UTC"
        in (result["detail"])
    )
    assert "blocked by sync window" in result["detail"]


def test_without_the_api_a_weekend_rollback_says_it_waits_and_status_agrees(prod_v1_v2: str, tmp_path: Path) -> None:
    with controller(prod_v1_v2, tmp_path, None) as client:
        result = fire(client)
    assert result["outcome"] == "rolled_back"
    assert result["sync"]["state"] == "held"
    assert result["detail"].endswith(
        "reverted in git, not yet synced: deny '0 18 * * 5' for 60h (UTC) until Mon 2026-12-07 06:00 UTC "
        "(automated sync; no Argo CD API configured)"
    )
    rows = {r["env"]: r for r in status.collect(clone(prod_v1_v2, tmp_path, "s"), now=SATURDAY)}
    assert rows["prod"]["sync"]["state"] == "held"
    assert rows["prod"]["sync"]["detail"].startswith(
        "reverted in git, not yet synced: deny '0 18 * * 5' for 60h (UTC) until Mon 2026-12-07 06:00 UTC"
    )
    assert rows["staging"]["sync"]["state"] == "unknown"


def test_contract_auth_rbac_and_busy(prod_v1_v2: str, argocd: FakeArgoCD, tmp_path: Path) -> None:
    repo = clone(prod_v1_v2, tmp_path, "c")
    wrong = request_sync(argo_cfg(argocd, tmp_path, "nope"), repo, "prod", "a" * 40, "0.1.0", SATURDAY)
    assert wrong.state == "failed" and "HTTP 401" in wrong.detail and "not yet synced" in wrong.detail
    argocd.actions = {"get", "sync"}
    no_override = request_sync(argo_cfg(argocd, tmp_path), repo, "prod", "a" * 40, "0.1.0", SATURDAY)
    assert no_override.state == "failed" and "permission denied: applications, override" in no_override.detail
    argocd.actions = {"get", "sync", "override"}
    argocd.busy.add("llm-service-prod")
    busy = request_sync(argo_cfg(argocd, tmp_path), repo, "prod", "a" * 40, "0.1.0", SATURDAY)
    assert busy.state == "failed" and "another operation is already in progress" in busy.detail
    argocd.busy.clear()
    ok = request_sync(argo_cfg(argocd, tmp_path), repo, "prod", "a" * 40, "0.1.0", SATURDAY)
    assert ok.state == "requested"


def test_a_restarted_controller_requests_the_sync_its_predecessor_may_have_missed(
    prod_v1_v2: str, argocd: FakeArgoCD, tmp_path: Path
) -> None:
    payload = alert_payload(env="prod")
    with controller(prod_v1_v2, tmp_path / "a", argo_cfg(argocd, tmp_path)) as first:
        assert first.post("/webhook", json=payload, headers=AUTH).json()["results"][0]["outcome"] == "rolled_back"
    # A fresh process (killed after the push, before the sync request): the repeat is a duplicate in git...
    with controller(prod_v1_v2, tmp_path / "b", argo_cfg(argocd, tmp_path)) as second:
        again = second.post("/webhook", json=payload, headers=AUTH).json()["results"][0]
        repeat = second.post("/webhook", json=payload, headers=AUTH).json()["results"][0]
    assert again["outcome"] == "duplicate" and again["sync"]["state"] == "requested"
    # ... whose sync is requested once per process, not on every repeat_interval.
    assert repeat["outcome"] == "duplicate" and "sync" not in repeat
    assert len(argocd.syncs("llm-service-prod")) == 2
