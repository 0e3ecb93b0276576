"""A paused or aborted canary: what the rollback controller decides and records, and what `status` shows.

staging runs the real chart values (rollout.enabled); v1 then v2 are promoted through the canary. Argo CD is
the stand-in, reporting the Rollout's health by Argo CD's health.lua from the Rollout object the cluster
would hold (Argo Rollouts v1.x `status.phase`/`status.message`, utils/rollout/rolloututil.go).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pipeline.commands import status
from pipeline.controller.app import create_app
from pipeline.controller.config import ControllerConfig
from pipeline.gitops import canary_record
from pipeline.gitops import promotion as pm
from pipeline.gitops.argocd_standin import ArgoCDStandIn
from pipeline.gitops.release import Release
from pipeline.gitops.repo import ensure_local_remote
from tests.promotion.conftest import clone
from tests.promotion.test_canary_promotion import canary_source, to_dev, to_staging
from tests.rollback.conftest import TOKEN, alert_payload
from tests.rollback.test_argocd_sync import SATURDAY, argo_cfg, argocd_for, serve_argocd  # noqa: F401

AUTH = {"Authorization": f"Bearer {TOKEN}"}
APP = "llm-service-staging"

# The Rollout's status as Argo Rollouts v1.x writes it in each phase (CalculateRolloutPhase; the abort
# message is conditions.go RolloutAbortedMessage + the failed analysis).
LIVE = {
    "aborted": {
        "phase": "Degraded",
        "message": 'RolloutAborted: Rollout aborted update to revision 2: Metric "error-ratio" assessed Failed '
        "due to failed (2) > failureLimit (1)",
        "abort": True,
    },
    "paused": {
        "phase": "Paused",
        "message": "InconclusiveAnalysisRun",
        "pauseConditions": [{"reason": "InconclusiveAnalysisRun", "startTime": "2026-12-05T11:58:00Z"}],
    },
}


def live_rollout(phase: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "llm-service", "namespace": "llm-staging", "generation": 2},
        "spec": {"replicas": 2, "strategy": {"canary": {}}},
        "status": {"observedGeneration": "2", **LIVE[phase]},
    }


@pytest.fixture
def canary_v1_v2(tmp_path: Path, make_release: Callable[..., Release]) -> tuple[str, Release, Release]:
    remote = str(ensure_local_remote(tmp_path / "remote" / "gitops.git", canary_source(tmp_path / "src")))
    v1, v2 = make_release(1), make_release(2)
    for i, rel in enumerate((v1, v2)):
        to_dev(remote, rel, tmp_path / f"d{i}")
        assert to_staging(remote, tmp_path / f"s{i}").ok
    return remote, v1, v2


def fire(remote: str, tmp_path: Path, argocd: ArgoCDStandIn | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    audit = tmp_path / "audit.jsonl"
    cfg = ControllerConfig(
        gitops_repo=remote,
        work_root=tmp_path / "ctl",
        bearer_token=TOKEN,
        audit_file=audit,
        argocd=argo_cfg(argocd, tmp_path / "t") if argocd else None,
        clock=lambda: SATURDAY,
    )
    with TestClient(create_app(cfg)) as client:
        resp = client.post("/webhook", json=alert_payload(env="staging"), headers=AUTH)
    assert resp.status_code == 200, resp.text
    return resp.json()["results"][0], [json.loads(line) for line in audit.read_text().splitlines()]


@pytest.mark.parametrize(
    ("phase", "note"),
    [
        ("aborted", "aborted rollout: reverting the promotion so git matches the stable release served; "),
        ("paused", "paused rollout: reverting the promotion (the revert aborts it"),
    ],
)
def test_an_error_alert_on_a_paused_or_aborted_canary_reverts_and_records_the_rollout_state(
    canary_v1_v2: tuple[str, Release, Release],
    tmp_path: Path,
    serve_argocd: Callable[[ArgoCDStandIn], ArgoCDStandIn],  # noqa: F811
    phase: str,
    note: str,
) -> None:
    remote, v1, v2 = canary_v1_v2
    argocd = serve_argocd(argocd_for(remote, SATURDAY))
    argocd.apps[APP].live = [live_rollout(phase)]
    result, audit = fire(remote, tmp_path, argocd)

    assert result["outcome"] == "rolled_back", result
    assert result["detail"].startswith(note), result["detail"]
    assert result["rollout"]["state"] == phase and result["rollout"]["source"] == "argocd"
    assert result["rollout"]["git_state"] == "progressing"
    decision = next(a for a in audit if a["event"] == "decision")
    assert decision["rollout"]["state"] == phase
    # Git matches what is served: v1's pins, and the canary record says the release moved back and why.
    head = clone(remote, tmp_path, "head")
    assert pm.read_release(head, "staging") == v1
    commit = head.log("environments/staging", limit=1)[0]
    assert (commit.trailer("Rollout-State"), commit.trailer("Rollout-Observed")) == ("rolled_back", phase)
    record = canary_record.read(head, "staging")
    assert record is not None
    assert (record["state"], record["observed"], record["release"]) == (
        "rolled_back",
        phase,
        {"from": v2.id, "to": v1.id},
    )
    assert record["reverts"] == [commit.trailer("Reverts")]


def test_without_the_argo_cd_api_the_decision_records_the_git_state(
    canary_v1_v2: tuple[str, Release, Release], tmp_path: Path
) -> None:
    remote, v1, _ = canary_v1_v2
    result, _ = fire(remote, tmp_path, None)
    assert result["outcome"] == "rolled_back", result
    # Live phase unknown: no paused/aborted claim, the git record's state is what is known.
    assert (result["rollout"]["state"], result["rollout"]["source"]) == ("progressing", "git")
    assert not result["detail"].startswith(("aborted rollout", "paused rollout"))
    head = clone(remote, tmp_path, "head")
    record = canary_record.read(head, "staging")
    assert record is not None and record["state"] == "rolled_back" and "observed" not in record
    assert pm.read_release(head, "staging") == v1


@pytest.mark.parametrize("phase", ["aborted", "paused"])
def test_status_shows_a_paused_or_aborted_canary(
    canary_v1_v2: tuple[str, Release, Release],
    tmp_path: Path,
    serve_argocd: Callable[[ArgoCDStandIn], ArgoCDStandIn],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    phase: str,
) -> None:
    remote, v1, v2 = canary_v1_v2
    argocd = serve_argocd(argocd_for(remote, SATURDAY))
    argocd.apps[APP].live = [live_rollout(phase)]
    cfg = argo_cfg(argocd, tmp_path / "t")
    monkeypatch.setenv("ARGOCD_SERVER", argocd.url)
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN_FILE", str(cfg.token_file))
    rows = {r["env"]: r for r in status.collect(clone(remote, tmp_path, "s"), now=SATURDAY)}
    ro = rows["staging"]["rollout"]
    assert ro["state"] == phase
    assert (ro["git_state"], ro["from"], ro["to"]) == ("progressing", v1.id, v2.id)
    assert ro["live"]["health"]["status"] == {"aborted": "Degraded", "paused": "Suspended"}[phase]
    if phase == "aborted":
        assert f"git still pins {v2.id}" in ro["detail"]
    else:
        assert ro["detail"].startswith("paused (InconclusiveAnalysisRun)")
    assert rows["dev"]["rollout"] is None  # a Deployment env: no Rollout, no record


def test_status_without_the_api_shows_the_git_state(
    canary_v1_v2: tuple[str, Release, Release], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote, _, v2 = canary_v1_v2
    monkeypatch.delenv("ARGOCD_SERVER", raising=False)
    rows = {r["env"]: r for r in status.collect(clone(remote, tmp_path, "s"), now=dt.datetime.now(dt.UTC))}
    ro = rows["staging"]["rollout"]
    assert (ro["state"], ro["live"], ro["to"]) == ("progressing", None, v2.id)
    plan = canary_record.plan(tmp_path / "src", "staging", v2.id)  # the values the remote was seeded from
    assert plan is not None and ro["steps"] == canary_record.steps_line(plan["steps"])
