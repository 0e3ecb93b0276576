"""The rollback controller: auth, labels, dedup, ordering, unknown env, rate limit, metrics, audit."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.commands import unfreeze
from pipeline.controller.app import create_app
from pipeline.controller.config import ControllerConfig
from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo
from tests.rollback.conftest import TOKEN, LiveController, alert_payload, promote_chain

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(remote: str, tmp_path: Path) -> Iterator[TestClient]:
    cfg = ControllerConfig(
        gitops_repo=remote,
        work_root=tmp_path / "ctl",
        bearer_token=TOKEN,
        basic_user="am",
        basic_password="pw",
        audit_file=tmp_path / "audit.jsonl",
    )
    with TestClient(create_app(cfg)) as c:
        yield c


def head(remote: str, tmp_path: Path) -> GitOpsRepo:
    repo = GitOpsRepo(remote, tmp_path / "check")
    repo.sync()
    return repo


def outcomes(resp: Any) -> list[str]:
    return [r["outcome"] for r in resp.json()["results"]]


def test_firing_rollback_alert_reverts_and_records_the_alert(
    client: TestClient, remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    v1, _ = v1_v2
    payload = alert_payload()
    resp = client.post("/webhook", json=payload, headers=AUTH)
    assert resp.status_code == 200 and outcomes(resp) == ["rolled_back"]
    repo = head(remote, tmp_path)
    assert pm.read_release(repo, "staging") == v1 and pm.read_freeze(repo, "staging").frozen
    c = repo.log(limit=1)[0]
    assert c.trailer("Rollback-Trigger") == "alert" and c.trailer("Alert-Name") == "LLMServiceHighErrorRate"
    assert c.trailer("Alert-Starts-At") == payload["alerts"][0]["startsAt"]
    assert "alert LLMServiceHighErrorRate firing since" in c.trailer("Rollback-Reason")
    metrics = client.get("/metrics").text
    assert 'rollback_controller_rollbacks_total{env="staging",outcome="rolled_back"} 1.0' in metrics
    audit = (tmp_path / "audit.jsonl").read_text()
    assert '"outcome": "rolled_back"' in audit


def test_unauthenticated_and_wrong_credentials_get_401_and_no_action(
    client: TestClient, remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    before = head(remote, tmp_path).head()
    assert client.post("/webhook", json=alert_payload()).status_code == 401
    assert client.post("/webhook", json=alert_payload(), headers={"Authorization": "Bearer nope"}).status_code == 401
    bad_basic = "Basic " + base64.b64encode(b"am:wrong").decode()
    assert client.post("/webhook", json=alert_payload(), headers={"Authorization": bad_basic}).status_code == 401
    assert head(remote, tmp_path).head() == before
    assert 'rollback_controller_webhooks_total{result="unauthorized"} 3.0' in client.get("/metrics").text


def test_basic_auth_as_alertmanager_http_config_sends_it(client: TestClient, v1_v2: tuple[Release, Release]) -> None:
    basic = "Basic " + base64.b64encode(b"am:pw").decode()
    assert outcomes(client.post("/webhook", json=alert_payload(), headers={"Authorization": basic})) == ["rolled_back"]


def test_duplicate_notifications_roll_back_once(
    client: TestClient, remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    payload = alert_payload()
    assert outcomes(client.post("/webhook", json=payload, headers=AUTH)) == ["rolled_back"]
    after_first = head(remote, tmp_path).head()
    # Alertmanager repeats (repeat_interval) and may route the same alert through two groups.
    for gk in (payload["groupKey"], "{}:{other-route}"):
        again = client.post("/webhook", json={**payload, "groupKey": gk}, headers=AUTH)
        assert outcomes(again) == ["duplicate"]
    assert head(remote, tmp_path).head() == after_first


def test_out_of_order_notifications(
    client: TestClient, remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    now = dt.datetime.now(dt.UTC)
    current = alert_payload(starts_at=(now + dt.timedelta(seconds=2)).isoformat())
    resolved = alert_payload(status="resolved", starts_at=current["alerts"][0]["startsAt"])
    older = alert_payload(starts_at=(now - dt.timedelta(hours=2)).isoformat(), fingerprint="0000000000000001")
    # The resolved notification overtakes the firing one: nothing to do.
    assert outcomes(client.post("/webhook", json=resolved, headers=AUTH)) == ["ignored"]
    # An episode that started before the current pins were committed did not come from them.
    assert outcomes(client.post("/webhook", json=older, headers=AUTH)) == ["stale"]
    assert outcomes(client.post("/webhook", json=current, headers=AUTH)) == ["rolled_back"]
    rolled = head(remote, tmp_path).head()
    # A late, different episode after the rollback: the env already runs a rollback's pins.
    late = alert_payload(starts_at=(now + dt.timedelta(seconds=3)).isoformat(), fingerprint="ffff000000000000")
    assert outcomes(client.post("/webhook", json=late, headers=AUTH)) == ["already_rolled_back"]
    assert head(remote, tmp_path).head() == rolled


def test_unknown_env_and_unlabelled_alerts_do_nothing(
    client: TestClient, remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    before = head(remote, tmp_path).head()
    assert outcomes(client.post("/webhook", json=alert_payload(env="qa"), headers=AUTH)) == ["unknown_env"]
    assert outcomes(client.post("/webhook", json=alert_payload(rollback="false"), headers=AUTH)) == ["ignored"]
    assert client.post("/webhook", json={"version": "3", "alerts": []}, headers=AUTH).status_code == 400
    assert client.post("/webhook", content=b"not json", headers=AUTH).status_code == 400
    assert head(remote, tmp_path).head() == before
    assert 'outcome="unknown_env"' in client.get("/metrics").text


def test_rate_limit_per_env_per_window(
    client: TestClient, remote: str, tmp_path: Path, v1_v2: tuple[Release, Release], make_release: Any
) -> None:
    assert outcomes(client.post("/webhook", json=alert_payload(), headers=AUTH)) == ["rolled_back"]
    unfreeze.unfreeze(GitOpsRepo(remote, tmp_path / "u"), "staging", "lead")
    promote_chain(remote, tmp_path / "again", [make_release(3)])
    second = alert_payload(fingerprint="1111111111111111")
    assert outcomes(client.post("/webhook", json=second, headers=AUTH)) == ["rate_limited"]
    assert pm.read_release(head(remote, tmp_path), "staging") == make_release(3)


def test_nothing_to_roll_back_to(client: TestClient, remote: str, tmp_path: Path, make_release: Any) -> None:
    promote_chain(remote, tmp_path, [make_release(1)])
    assert outcomes(client.post("/webhook", json=alert_payload(), headers=AUTH)) == ["nothing_to_roll_back"]


def test_refuses_to_start_without_credentials(remote: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no webhook credentials"):
        create_app(ControllerConfig(gitops_repo=remote, work_root=tmp_path))


def test_live_server_401_and_health(
    controller: LiveController, remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]
) -> None:
    before = head(remote, tmp_path).head()
    assert controller.post(alert_payload(), token=None).status_code == 401
    assert head(remote, tmp_path).head() == before
    assert controller.post(alert_payload()).json()["results"][0]["outcome"] == "rolled_back"
