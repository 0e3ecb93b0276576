"""Argo CD's health of an Argo Rollouts Rollout (health.lua ported) and the canary phase `status` and the
controller read from it.

Cases are argoproj/argo-cd resource_customizations/argoproj.io/Rollout/testdata/*.yaml (the fields health.lua
reads), with the health resource_customizations/argoproj.io/Rollout/health_test.yaml expects for each.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.gitops.argocd_rollout import phase_of, rollout_health

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
