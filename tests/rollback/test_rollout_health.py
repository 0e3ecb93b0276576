"""Argo CD's health of an Argo Rollouts Rollout (health.lua ported) and the canary phase `status` and the
controller read from it.

Cases are argoproj/argo-cd resource_customizations/argoproj.io/Rollout/testdata/*.yaml (the fields health.lua
reads), with the health resource_customizations/argoproj.io/Rollout/health_test.yaml expects for each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.gitops.argocd_rollout import argocd_health, live_rollout, phase_of, rollout_health
from pipeline.gitops.argocd_sync import ArgoCDConfig

CANARY = {"canary": {"steps": [{"setWeight": 10}, {"analysis": {}}]}}


def rollout(generation: int, status: dict[str, Any], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "llm-service", "generation": generation},
        "spec": {"replicas": 5, "strategy": CANARY, **(spec or {})},
        "status": status,
    }


CASES = {
    # suspended_v1.0_pausedRollout.yaml: v1 phase Paused → Suspended with the phase message.
    "v1-paused": (
        rollout(5, {"observedGeneration": "5", "phase": "Paused", "message": "CanaryPauseStep"}),
        {"status": "Suspended", "message": "CanaryPauseStep"},
    ),
    # degraded_statusPhaseMessage.yaml: phase and message surfaced as they are.
    "v1-phase-degraded": (
        rollout(1, {"observedGeneration": "8575574967", "phase": "Degraded", "message": "InvalidSpec"}),
        {"status": "Degraded", "message": "InvalidSpec"},
    ),
    # degraded_abortedRollout.yaml: no phase (v0.x), the Progressing condition's RolloutAborted reason.
    "v0-aborted": (
        rollout(
            3,
            {
                "observedGeneration": "58b949649c",
                "abort": True,
                "conditions": [
                    {"type": "Available", "reason": "AvailableReason", "message": "Rollout has minimum availability"},
                    {"type": "Progressing", "reason": "RolloutAborted", "message": "Rollout is aborted"},
                ],
                "currentPodHash": "6758949f55",
                "canary": {"stableRS": "645d5dbc4c"},
            },
        ),
        {"status": "Degraded", "message": "Rollout is aborted"},
    ),
    # suspended_userPause.yaml: spec.paused without a phase.
    "user-pause": (
        rollout(2, {"observedGeneration": "2", "currentPodHash": "abc", "conditions": []}, {"paused": True}),
        {"status": "Suspended", "message": "Rollout is paused"},
    ),
    # progressing_newGeneration.yaml: the controller has not seen the new spec yet.
    "new-generation": (
        rollout(9, {"observedGeneration": "8", "phase": "Healthy"}),
        {"status": "Progressing", "message": "Waiting for rollout spec update to be observed"},
    ),
    # canary/progressing_setWeightStep.yaml: fewer updated replicas than desired.
    "set-weight-step": (
        rollout(
            4,
            {
                "observedGeneration": "4",
                "conditions": [],
                "currentPodHash": "new",
                "stableRS": "old",
                "replicas": 5,
                "updatedReplicas": 1,
            },
        ),
        {"status": "Progressing", "message": "Waiting for roll out to finish: More replicas need to be updated"},
    ),
    # canary/healthy_executedAllSteps.yaml: all updated and available, stable is the current hash.
    "healthy": (
        rollout(
            4,
            {
                "observedGeneration": "4",
                "conditions": [],
                "currentPodHash": "new",
                "stableRS": "new",
                "replicas": 5,
                "updatedReplicas": 5,
                "availableReplicas": 5,
            },
        ),
        {"status": "Healthy", "message": ""},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_health_is_what_argo_cds_health_lua_returns(case: str) -> None:
    obj, want = CASES[case]
    assert rollout_health(obj) == want


@pytest.mark.parametrize(
    ("health", "phase"),
    [
        ({"status": "Suspended", "message": "InconclusiveAnalysisRun"}, "paused"),
        ({"status": "Suspended", "message": "manually paused"}, "paused"),
        # Argo Rollouts v1.x: CalculateRolloutPhase → "RolloutAborted: <condition message>".
        ({"status": "Degraded", "message": "RolloutAborted: Rollout aborted update to revision 2"}, "aborted"),
        ({"status": "Degraded", "message": "Rollout is aborted"}, "aborted"),
        # Degraded for another reason is not an abort: the canary did not hand traffic back.
        ({"status": "Degraded", "message": "ProgressDeadlineExceeded: ReplicaSet timed out"}, "degraded"),
        ({"status": "Progressing", "message": "more replicas need to be updated"}, "progressing"),
        ({"status": "Healthy", "message": ""}, "healthy"),
    ],
)
def test_phase_of_the_reported_health(health: dict[str, str], phase: str) -> None:
    assert phase_of(health) == phase


def test_stable_rs_is_read_as_get_stable_rs_does() -> None:
    """getStableRS: `status.canary` present without `stableRS` is nil (not ""), which a blue-green rollout
    reads as "not yet stable"; `status.stableRS: ""` is returned as it is, not replaced by canary.stableRS."""
    status = {
        "observedGeneration": "1",
        "currentPodHash": "new",
        "conditions": [],
        "replicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1,
        "blueGreen": {"activeSelector": "new"},
    }
    blue_green = {"replicas": 1, "strategy": {"blueGreen": {}}}
    obj = rollout(1, {**status, "canary": {}}, blue_green)
    assert rollout_health(obj) == {"status": "Progressing", "message": "waiting for analysis to complete"}
    assert rollout_health(rollout(1, status, blue_green)) == {"status": "Healthy", "message": ""}
    canary = rollout(1, {**status, "stableRS": "", "canary": {"stableRS": "new"}}, {"replicas": 1})
    assert rollout_health(canary) == {"status": "Progressing", "message": "Waiting for rollout to finish steps"}


@pytest.mark.parametrize(
    ("obj", "want"),
    [
        # gitops-engine/pkg/health/health.go GetResourceHealth: deletion comes before the Lua check.
        (
            {
                **rollout(5, {"observedGeneration": "5", "phase": "Healthy"}),
                "metadata": {"name": "llm-service", "generation": 5, "deletionTimestamp": "2026-12-08T00:00:00Z"},
            },
            {"status": "Progressing", "message": "Pending deletion"},
        ),
        # health.lua fails on `ipairs(nil)` (no phase, no conditions): Unknown with the script's error.
        (
            rollout(5, {"observedGeneration": "5", "currentPodHash": "a"}),
            {"status": "Unknown", "message": "bad argument #1 to ipairs (table expected, got nil)"},
        ),
        # util/lua/lua.go ExecuteHealthLua: a phase that is no health code is not passed through.
        (
            rollout(5, {"observedGeneration": "5", "phase": "Running"}),
            {"status": "Unknown", "message": "Lua returned an invalid health status"},
        ),
        # HealthStatus.message is omitempty.
        (rollout(5, {"observedGeneration": "5", "phase": "Healthy", "message": ""}), {"status": "Healthy"}),
    ],
)
def test_argocd_health_is_what_argo_cd_records_of_the_script(obj: dict[str, Any], want: dict[str, str]) -> None:
    assert argocd_health(obj) == want


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (httpx.Response(200, text="<html>login</html>"), "not an ApplicationTree"),
        (httpx.Response(200, json=[]), "not an ApplicationTree"),
        (httpx.Response(200, json={"nodes": {}}), "not an ApplicationTree"),
        (httpx.Response(403, json={"code": 7, "message": "permission denied"}), "HTTP 403"),
    ],
)
def test_live_rollout_reports_what_is_not_a_resource_tree_instead_of_raising(
    tmp_path: Path, reply: httpx.Response, error: str
) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    cfg = ArgoCDConfig(server="https://argocd.invalid", token_file=token)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply

    got = live_rollout(cfg, "staging", transport=httpx.MockTransport(handler))
    assert got is not None and got["error"].startswith(error), got
    # The read the real server requires: the app's resource-tree, a Bearer token.
    assert seen[0].url.path == f"/api/v1/applications/{cfg.app_name.format(env='staging')}/resource-tree"
    assert seen[0].headers["Authorization"] == "Bearer t"


def test_an_empty_tree_is_no_rollout(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    cfg = ArgoCDConfig(server="https://argocd.invalid", token_file=token)
    # ApplicationTree with no nodes marshals as {} (omitempty): a Deployment env, or nothing live yet.
    assert live_rollout(cfg, "dev", transport=httpx.MockTransport(lambda r: httpx.Response(200, json={}))) is None
