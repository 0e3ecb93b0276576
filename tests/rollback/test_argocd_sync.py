"""Rollbacks reach the cluster at any hour through requests a real argocd-server accepts (issue #18):
the controller syncs the root app with a token of its own project, waits until the env's Application
spec shows the rollback, and syncs it without revision overrides — checked against the stand-in that
argues from Argo CD's source (pipeline/gitops/argocd_standin.py), for prod (pinned) and dev (branch)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ruamel.yaml import YAML

from pipeline.commands import status
from pipeline.controller.app import create_app
from pipeline.controller.config import ControllerConfig
from pipeline.gitops.argocd_pin import pinned_revision
from pipeline.gitops.argocd_standin import ArgoCDStandIn, stand_in_for
from pipeline.gitops.argocd_sync import ArgoCDConfig, request_sync
from pipeline.gitops.release import Release
from pipeline.gitops.repo import ensure_local_remote, git
from pipeline.runtime.tools import REPO_ROOT
from tests.promotion.conftest import clone, write_envs
from tests.rollback.conftest import TOKEN, alert_payload, promote_chain, to_prod

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARGOCD = REPO_ROOT / "environments" / "argocd"
APPPROJECT = ARGOCD / "appproject-llm-service.yaml"
# Saturday noon UTC: inside the prod weekend deny window (Fri 18:00 → Mon 06:00).
SATURDAY = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
# Inside the year-end freeze (Dec 20 + 336 h), on a weekday and on the first Saturday of 2027.
DEC_30 = dt.datetime(2026, 12, 30, 12, 0, tzinfo=dt.UTC)
JAN_2 = dt.datetime(2027, 1, 2, 12, 0, tzinfo=dt.UTC)


def project_docs(service_project: str | None = None) -> list[dict[str, Any]]:
    docs = [YAML(typ="safe").load((ARGOCD / "appproject-llm-platform.yaml").read_text())]
    docs.append(YAML(typ="safe").load(service_project or APPPROJECT.read_text()))
    return docs


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
def dev_v1_v2(remote: str, tmp_path: Path, make_release: Callable[..., Release]) -> str:
    promote_chain(remote, tmp_path, [make_release(1), make_release(2)], env="dev")
    return remote


def argocd_for(remote: str, at: dt.datetime, service_project: str | None = None, **kw: Any) -> ArgoCDStandIn:
    return stand_in_for(remote, project_docs(service_project), lambda: at, ("dev", "staging", "prod"), **kw)


@pytest.fixture
def serve_argocd() -> Iterator[Callable[[ArgoCDStandIn], ArgoCDStandIn]]:
    with_stack: list[Any] = []

    def start(stand_in: ArgoCDStandIn) -> ArgoCDStandIn:
        cm = stand_in.serve()
        with_stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(with_stack):
        cm.__exit__(None, None, None)


def argo_cfg(
    fake: ArgoCDStandIn,
    tmp_path: Path,
    token: str | None = None,
    root_token: str | None = "issue",  # noqa: S107
    wait: float = 5,
) -> ArgoCDConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "argocd-token"
    path.write_text((token or fake.issue_token("llm-service", "rollback-controller")) + "\n")
    root = None
    if root_token:
        root = tmp_path / "argocd-root-token"
        token = fake.issue_token("llm-platform", "rollback-controller") if root_token == "issue" else root_token
        root.write_text(token + "\n")
    return ArgoCDConfig(server=fake.url, token_file=path, root_token_file=root, spec_wait=wait, poll=0.05)


def controller(remote: str, tmp_path: Path, argocd: ArgoCDConfig | None, at: dt.datetime = SATURDAY) -> TestClient:
    cfg = ControllerConfig(
        gitops_repo=remote, work_root=tmp_path / "ctl", bearer_token=TOKEN, argocd=argocd, clock=lambda: at
    )
    return TestClient(create_app(cfg))


def fire(client: TestClient, env: str = "prod") -> dict[str, Any]:
    resp = client.post("/webhook", json=alert_payload(env=env), headers=AUTH)
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()["results"][0]
    return result


def test_appproject_deny_windows_allow_manual_sync() -> None:
    windows = YAML(typ="safe").load(APPPROJECT.read_text())["spec"]["syncWindows"]
    prod = [w for w in windows if w["kind"] == "deny"]
    assert prod and all(w.get("manualSync") is True for w in prod)


@pytest.mark.parametrize("at", [SATURDAY, DEC_30, JAN_2], ids=["weekend", "year-end", "year-end-weekend"])
def test_a_prod_rollback_in_a_freeze_ends_with_a_sync_argo_cd_accepts(
    prod_v1_v2: str, tmp_path: Path, serve_argocd: Callable[[ArgoCDStandIn], ArgoCDStandIn], at: dt.datetime
) -> None:
    argocd = serve_argocd(argocd_for(prod_v1_v2, at))
    before = argocd.apps["llm-service-prod"].sources[1]["targetRevision"]
    with controller(prod_v1_v2, tmp_path, argo_cfg(argocd, tmp_path / "t"), at) as client:
        result = fire(client)
    assert result["outcome"] == "rolled_back", result
    assert result["sync"]["state"] == "requested", result["sync"]
    pin = pinned_revision(clone(prod_v1_v2, tmp_path, "after"), "prod")
    assert pin and pin != before and result["sync"]["revision"] == pin
    # Root app first (its project's token: it applies the moved pin), then prod's own spec, no overrides.
    posts = [r for r in argocd.requests if r["method"] == "POST"]
    assert [r["path"] for r in posts] == [
        "/api/v1/applications/llm-platform-root/sync",
        "/api/v1/applications/llm-service-prod/sync",
    ]
    assert posts[0]["auth"] != posts[1]["auth"]
    body = argocd.syncs("llm-service-prod")[0]
    assert "revisions" not in body and "sourcePositions" not in body and "revision" not in body
    assert body["prune"] is True and body["dryRun"] is False
    argocd.wait_idle("llm-service-prod")
    app = argocd.apps["llm-service-prod"]
    assert app.sources[1]["targetRevision"] == pin and app.sync["revisions"][1] == pin
    assert app.operation_state and app.operation_state["phase"] == "Succeeded"


def test_a_dev_rollback_syncs_the_branch_without_overriding_it(
    dev_v1_v2: str, tmp_path: Path, serve_argocd: Callable[[ArgoCDStandIn], ArgoCDStandIn]
) -> None:
    argocd = serve_argocd(argocd_for(dev_v1_v2, SATURDAY))
    with controller(dev_v1_v2, tmp_path, argo_cfg(argocd, tmp_path / "t"), SATURDAY) as client:
        result = fire(client, "dev")
    assert result["outcome"] == "rolled_back", result
    assert result["sync"]["state"] == "requested", result["sync"]
    # dev follows the branch: no root sync, and the sync resolves `main` to the rollback commit.
    assert [r["path"] for r in argocd.requests if r["method"] == "POST"] == [
        "/api/v1/applications/llm-service-dev/sync"
    ]
    argocd.wait_idle("llm-service-dev")
    head = git("--git-dir", dev_v1_v2, "rev-parse", "main").strip()
    assert argocd.apps["llm-service-dev"].sync["revisions"][1] == head == result["commit"]


def test_the_sha_override_the_old_client_sent_is_refused_on_an_automated_app(
    dev_v1_v2: str, tmp_path: Path, serve_argocd: Callable[[ArgoCDStandIn], ArgoCDStandIn]
) -> None:
    """The request of the previous controller (string positions; a SHA for a branch source)."""
    import httpx

    argocd = serve_argocd(argocd_for(dev_v1_v2, SATURDAY))
    token = argocd.issue_token("llm-service", "rollback-controller")
    head = git("--git-dir", dev_v1_v2, "rev-parse", "main").strip()
    old = {"name": "llm-service-dev", "prune": False, "revisions": ["0.1.0", head], "sourcePositions": ["1", "2"]}
    url = f"{argocd.url}/api/v1/applications/llm-service-dev/sync"
    resp = httpx.post(url, json=old, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 400 and resp.json()["code"] == 3
    assert (
        "cannot unmarshal string into Go struct field ApplicationSyncRequest.sourcePositions of type int64"
        in (resp.json()["message"])
    )
    resp = httpx.post(url, json={**old, "sourcePositions": [1, 2]}, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 400 and resp.json()["code"] == 9
    assert f"to {head}: auto-sync currently set to main" in resp.json()["message"]
    # With application.sync.requireOverridePrivilegeForRevisionSync the role (get + sync only) is refused first.
    argocd.require_override_privilege = True
    resp = httpx.post(url, json={**old, "sourcePositions": [1, 2]}, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403 and resp.json()["message"].startswith(
        "permission denied: applications, override, llm-service/llm-service-dev"
    )


@pytest.mark.parametrize("prod_v1_v2", [without_manual_sync(APPPROJECT.read_text())], indirect=True)
def test_a_window_that_denies_manual_sync_is_reported_not_hidden(
    prod_v1_v2: str, tmp_path: Path, serve_argocd: Callable[[ArgoCDStandIn], ArgoCDStandIn]
) -> None:
    argocd = serve_argocd(argocd_for(prod_v1_v2, SATURDAY, without_manual_sync(APPPROJECT.read_text())))
    with controller(prod_v1_v2, tmp_path, argo_cfg(argocd, tmp_path / "t")) as client:
        result = fire(client)
    assert result["outcome"] == "rolled_back"
    assert result["sync"]["state"] == "held"
    assert (
        "reverted in git, not yet synced: deny '0 18 * * 5' for 60h (UTC) until Mon 2026-12-07 06:00 UTC"
        in (result["detail"])
    )
    assert "blocked by sync window" in result["detail"]


def test_without_a_root_token_prod_waits_for_the_pin_and_says_so_then_a_repeat_retries(
    prod_v1_v2: str, tmp_path: Path, serve_argocd: Callable[[ArgoCDStandIn], ArgoCDStandIn]
) -> None:
    argocd = serve_argocd(argocd_for(prod_v1_v2, SATURDAY))
    cfg = argo_cfg(argocd, tmp_path / "t", root_token=None, wait=0.3)
    payload = alert_payload(env="prod")
    with controller(prod_v1_v2, tmp_path, cfg) as client:
        first = client.post("/webhook", json=payload, headers=AUTH).json()["results"][0]
        assert first["outcome"] == "rolled_back" and first["sync"]["state"] == "failed"
        assert "no token for llm-platform-root (ARGOCD_ROOT_TOKEN_FILE)" in first["detail"]
        assert "llm-service-prod's spec still has source 2 at" in first["detail"]
        assert argocd.syncs("llm-service-prod") == []  # never an override the server would refuse
        # The root app's own auto-sync moves the pin; the next notification retries (not remembered as done).
        argocd.apps["llm-platform-root"].sync["revision"] = git("--git-dir", prod_v1_v2, "rev-parse", "main").strip()
        argocd.regenerate()
        again = client.post("/webhook", json=payload, headers=AUTH).json()["results"][0]
        assert again["outcome"] == "duplicate" and again["sync"]["state"] == "requested", again
        settled = client.post("/webhook", json=payload, headers=AUTH).json()["results"][0]
    assert settled["outcome"] == "duplicate" and "sync" not in settled
    assert len(argocd.syncs("llm-service-prod")) == 1


def test_the_service_token_cannot_sync_the_root_app(
    prod_v1_v2: str, tmp_path: Path, serve_argocd: Callable[[ArgoCDStandIn], ArgoCDStandIn]
) -> None:
    """The previous controller synced llm-platform-root with the llm-service token: always 403."""
    argocd = serve_argocd(argocd_for(prod_v1_v2, SATURDAY))
    service = argocd.issue_token("llm-service", "rollback-controller")
    with controller(prod_v1_v2, tmp_path, argo_cfg(argocd, tmp_path / "t", root_token=service, wait=0.3)) as client:
        result = fire(client)
    assert result["outcome"] == "rolled_back" and result["sync"]["state"] == "failed"
    assert "sync of llm-platform-root refused (HTTP 403: permission denied)" in result["detail"]
    assert argocd.syncs("llm-service-prod") == []


def test_contract_auth_busy_and_unknown_app(
    prod_v1_v2: str, tmp_path: Path, serve_argocd: Callable[[ArgoCDStandIn], ArgoCDStandIn]
) -> None:
    argocd = serve_argocd(argocd_for(prod_v1_v2, SATURDAY))
    repo = clone(prod_v1_v2, tmp_path, "c")
    pin = pinned_revision(repo, "prod")
    assert pin
    chart = argocd.apps["llm-service-prod"].sources[0]["targetRevision"]
    wrong = request_sync(argo_cfg(argocd, tmp_path / "a", "nope"), repo, "prod", pin, chart, SATURDAY)
    assert wrong.state == "failed" and "HTTP 401" in wrong.detail and "not yet synced" in wrong.detail
    argocd.apps["llm-service-prod"].operation = {"sync": {}}
    busy = request_sync(argo_cfg(argocd, tmp_path / "b", wait=0.3), repo, "prod", pin, chart, SATURDAY)
    assert busy.state == "failed" and "another operation is already in progress" in busy.detail
    argocd.apps["llm-service-prod"].operation = None
    ok = request_sync(argo_cfg(argocd, tmp_path / "c"), repo, "prod", pin, chart, SATURDAY)
    assert ok.state == "requested", ok
    cfg = argo_cfg(argocd, tmp_path / "d")
    missing = request_sync(dataclasses.replace(cfg, app_name="nope-{env}"), repo, "prod", pin, chart, SATURDAY)
    assert missing.state == "failed" and "HTTP 403: permission denied" in missing.detail


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


YEAR_END = "deny '0 0 20 12 *' for 336h (UTC) until Sun 2027-01-03 00:00 UTC"
WEEKEND = "deny '0 18 * * 5' for 60h (UTC) until Mon 2027-01-04 06:00 UTC"


@pytest.mark.parametrize(("at", "held_by"), [(DEC_30, [YEAR_END]), (JAN_2, [YEAR_END, WEEKEND])], ids=["dec30", "jan2"])
def test_status_names_the_year_end_freeze_holding_prod(
    prod_v1_v2: str, tmp_path: Path, at: dt.datetime, held_by: list[str]
) -> None:
    rows = {r["env"]: r for r in status.collect(clone(prod_v1_v2, tmp_path, "s"), now=at)}
    assert rows["prod"]["sync"]["state"] == "held", rows["prod"]["sync"]
    assert all(w in rows["prod"]["sync"]["detail"] for w in held_by), rows["prod"]["sync"]["detail"]
    assert rows["staging"]["sync"]["state"] == "unknown"


def test_status_reads_the_revisions_of_a_multi_source_app(
    prod_v1_v2: str,
    tmp_path: Path,
    serve_argocd: Callable[[ArgoCDStandIn], ArgoCDStandIn],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argocd = serve_argocd(argocd_for(prod_v1_v2, SATURDAY))
    cfg = argo_cfg(argocd, tmp_path / "t")
    monkeypatch.setenv("ARGOCD_SERVER", argocd.url)
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN_FILE", str(cfg.token_file))
    app = argocd.apps["llm-service-prod"]
    assert app.sync["revision"] == "" and len(app.sync["revisions"]) == 2  # multi-source: controller/state.go
    rows = {r["env"]: r for r in status.collect(clone(prod_v1_v2, tmp_path, "s"), now=SATURDAY)}
    assert rows["prod"]["sync"]["state"] == "synced", rows["prod"]["sync"]
    assert rows["dev"]["sync"]["state"] == "synced", rows["dev"]["sync"]
    # Revisions are what the last refresh compared against: OutOfSync at the pin is not "synced".
    app.sync = {**app.sync, "status": "OutOfSync"}
    rows = {r["env"]: r for r in status.collect(clone(prod_v1_v2, tmp_path, "s2"), now=SATURDAY)}
    assert rows["prod"]["sync"]["state"] == "pending", rows["prod"]["sync"]
    app.sync = {**app.sync, "status": "Synced", "revisions": [app.sync["revisions"][0], "f" * 40]}
    rows = {r["env"]: r for r in status.collect(clone(prod_v1_v2, tmp_path, "s3"), now=SATURDAY)}
    assert rows["prod"]["sync"]["state"] == "pending"


def test_config_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARGOCD_SERVER", "argocd-server.argocd.svc")
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN_FILE", str(tmp_path / "t"))
    monkeypatch.setenv("ARGOCD_ROOT_TOKEN_FILE", str(tmp_path / "r"))
    monkeypatch.setenv("ARGOCD_CA_FILE", str(tmp_path / "ca.crt"))
    cfg = ArgoCDConfig.from_env()
    assert cfg is not None and cfg.server == "https://argocd-server.argocd.svc"
    assert cfg.root_token_file == tmp_path / "r" and cfg.verify == str(tmp_path / "ca.crt")
    monkeypatch.setenv("ARGOCD_INSECURE", "true")
    assert (ArgoCDConfig.from_env() or cfg).verify is False
    monkeypatch.setenv("ARGOCD_SPEC_WAIT", "soon")
    with pytest.raises(ValueError, match="ARGOCD_SPEC_WAIT must be a number of seconds, not 'soon'"):
        ArgoCDConfig.from_env()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate like argocd-server's default one: self-signed, for localhost/127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Argo CD")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    crt, pem = tmp_path / "tls.crt", tmp_path / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return crt, pem


def test_tls_to_argocd_server_verifies_against_the_given_ca_only(prod_v1_v2: str, tmp_path: Path) -> None:
    import ssl

    crt, key = self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    repo = clone(prod_v1_v2, tmp_path, "c")
    pin = pinned_revision(repo, "prod")
    with argocd_for(prod_v1_v2, SATURDAY).serve(tls=ctx) as argocd:
        chart = argocd.apps["llm-service-prod"].sources[0]["targetRevision"]
        base = argo_cfg(argocd, tmp_path / "t", root_token=None, wait=0.3)
        system = request_sync(base, repo, "prod", str(pin), chart, SATURDAY)
        assert system.state == "failed" and "CERTIFICATE_VERIFY_FAILED" in system.detail
        with_ca = request_sync(dataclasses.replace(base, verify=str(crt)), repo, "prod", str(pin), chart, SATURDAY)
        assert with_ca.state == "requested", with_ca
        missing_root = dataclasses.replace(base, verify=str(crt), root_token_file=tmp_path / "absent")
        again = request_sync(missing_root, repo, "prod", str(pin), chart, SATURDAY)
        assert "no token for llm-platform-root" in again.detail
