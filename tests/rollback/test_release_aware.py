"""Release-aware rollback (issue #13 item 3): the alert names the release; only the env's current
release, promoted within the bake window, is reverted; dependency failures are not release errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.controller.app import create_app
from pipeline.controller.config import ControllerConfig
from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo
from tests.rollback.conftest import TOKEN, alert_payload, promote_chain

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(remote: str, tmp_path: Path) -> Iterator[TestClient]:
    cfg = ControllerConfig(gitops_repo=remote, work_root=tmp_path / "ctl", bearer_token=TOKEN)
    with TestClient(create_app(cfg)) as c:
        yield c


def labelled(release: str | None, *, starts_at: dt.datetime | None = None, **labels: str) -> dict[str, Any]:
    """The rollback alert of staging, naming `release` (and any extra labels), as Alertmanager sends it."""
    t = starts_at or dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    payload = alert_payload(starts_at=t.isoformat().replace("+00:00", "Z"))
    alert = payload["alerts"][0]
    alert["labels"] = {**alert["labels"], **({"release": release} if release else {}), **labels}
    # Alertmanager's fingerprint is a hash of the label set: another release is another series.
    alert["fingerprint"] = f"{abs(hash(tuple(sorted(alert['labels'].items())))):016x}"[:16]
    return payload


def post(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    resp = client.post("/webhook", json=payload, headers=AUTH)
    assert resp.status_code == 200, resp.text
    results: list[dict[str, Any]] = resp.json()["results"]
    assert len(results) == 1, results
    return results[0]


def pinned(remote: str, tmp_path: Path, name: str) -> Release | None:
    repo = GitOpsRepo(remote, tmp_path / name)
    repo.sync()
    return pm.read_release(repo, "staging")


def test_fix_promoted_while_the_alert_fires_is_not_rolled_back_to_the_culprit(
    client: TestClient, remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2, v3 = make_release(1), make_release(2), make_release(3)
    promote_chain(remote, tmp_path / "a", [v1, v2])
    fired = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    # v2's alert fires; before the controller hears of it, the team promotes the fix v3.
    promote_chain(remote, tmp_path / "b", [v3])
    repeat = post(client, labelled(v2.id, starts_at=fired))
    assert repeat["outcome"] == "not_current" and v3.id in repeat["detail"]
    # The alert of v2's series re-fires (new startsAt, after v3's pins): still not v3's problem.
    refire = post(client, labelled(v2.id, starts_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)))
    assert refire["outcome"] == "not_current"
    assert pinned(remote, tmp_path, "c1") == v3
    # v3 gets its own evaluation: its own series firing rolls v3 back.
    own = post(client, labelled(v3.id, starts_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)))
    assert own["outcome"] == "rolled_back" and own["release"] == v3.id
    assert pinned(remote, tmp_path, "c2") == v2


def test_a_release_older_than_the_bake_window_is_not_rolled_back(
    client: TestClient,
    remote: str,
    tmp_path: Path,
    make_release: Callable[..., Release],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1, v2 = make_release(1), make_release(2)
    three_weeks_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=21)).isoformat()
    monkeypatch.setenv("GIT_COMMITTER_DATE", three_weeks_ago)
    promote_chain(remote, tmp_path, [v1, v2])
    monkeypatch.delenv("GIT_COMMITTER_DATE")
    # A 5xx burst today (load, an IdP outage) on a weeks-old healthy release: no revert, no freeze.
    for payload in (labelled(v2.id), labelled(None)):
        res = post(client, payload)
        assert res["outcome"] == "outside_bake_window", res
        assert "bake window" in res["detail"]
    assert pinned(remote, tmp_path, "c") == v2


@pytest.mark.parametrize("cause", ["idp", "redis"])
def test_dependency_failures_are_not_release_errors(
    client: TestClient, remote: str, tmp_path: Path, make_release: Callable[..., Release], cause: str
) -> None:
    v1, v2 = make_release(1), make_release(2)
    promote_chain(remote, tmp_path, [v1, v2])
    res = post(client, labelled(v2.id, cause=cause))
    assert res["outcome"] == "dependency" and f"cause={cause}" in res["detail"]
    assert pinned(remote, tmp_path, "c") == v2
    assert post(client, labelled(v2.id, cause="release"))["outcome"] == "rolled_back"


def test_the_named_current_release_is_rolled_back_and_recorded(
    client: TestClient, remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2 = make_release(1), make_release(2)
    promote_chain(remote, tmp_path, [v1, v2])
    assert post(client, labelled(v2.id))["outcome"] == "rolled_back"
    repo = GitOpsRepo(remote, tmp_path / "c")
    repo.sync()
    assert repo.log(limit=1)[0].trailer("Alert-Release") == v2.id


def test_one_notification_with_the_old_and_the_new_release_never_restores_the_failing_one(
    client: TestClient, remote: str, tmp_path: Path, make_release: Callable[..., Release]
) -> None:
    v1, v2, v3 = make_release(1), make_release(2), make_release(3)
    promote_chain(remote, tmp_path, [v1, v2, v3])
    # Alertmanager groups by alertname+env: v2's and v3's series arrive in the same notification.
    old = labelled(v2.id, starts_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30))
    new = labelled(v3.id)
    payload = {**old, "alerts": [*old["alerts"], *new["alerts"]]}
    resp = client.post("/webhook", json=payload, headers=AUTH)
    by_release = {r["release"]: r["outcome"] for r in resp.json()["results"]}
    # v3 is the current release, but rolling it back would restore v2, whose series fire too.
    assert by_release == {v2.id: "not_current", v3.id: "restore_failing"}
    assert pinned(remote, tmp_path, "c") == v3
    # Once v2's series stopped firing, v3's own alert rolls v3 back.
    assert post(client, labelled(v3.id))["outcome"] == "rolled_back"
    assert pinned(remote, tmp_path, "c2") == v2
