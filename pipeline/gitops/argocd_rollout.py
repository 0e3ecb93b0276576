"""What Argo CD reports of an env's Argo Rollouts `Rollout`: its health, and the canary phase that implies.

- Argo CD computes a Rollout's health with its built-in Lua check, argoproj/argo-cd
  `resource_customizations/argoproj.io/Rollout/health.lua`; `rollout_health` is that script in Python, and
  `argocd_health` what Argo CD makes of it (gitops-engine/pkg/health/health.go `GetResourceHealth`: an object
  being deleted is Progressing "Pending deletion"; a script error is Unknown with the error; util/lua/lua.go
  `ExecuteHealthLua`: a status that is not a health code is Unknown). The Argo CD stand-in serves
  `argocd_health`; nothing in the pipeline computes health itself. Argo Rollouts ≥ v1.0 writes
  `status.phase`/`status.message` (argoproj/argo-rollouts utils/rollout/rolloututil.go
  `CalculateRolloutPhase`), which health.lua surfaces with `Paused` renamed `Suspended`: a paused canary
  (pause step, inconclusive analysis, `kubectl argo rollouts pause`) is `Suspended`, an aborted one is
  `Degraded` with the message `RolloutAborted: Rollout aborted update to revision N: ...`
  (utils/conditions/conditions.go `RolloutAbortedReason`, `RolloutAbortedMessage`).
- Since Argo CD v3.0 resource health is no longer kept in the Application's `status.resources`
  (docs/operator-manual/upgrading/2.14-3.0.md, "Health status in the Application CR"): it is read from
  `GET /api/v1/applications/{name}/resource-tree` (server/application/application.proto `ResourceTree`,
  an `ApplicationTree` of `ResourceNode`s with `group`, `kind`, `name`, `health{status,message}`;
  pkg/apis/application/v1alpha1/types.go). The caller needs `get` on the Application, as for the app itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from pipeline.gitops.argocd_sync import ArgoCDClient, ArgoCDConfig

ROLLOUT_GROUP, ROLLOUT_KIND = "argoproj.io", "Rollout"
# Live canary phases `status` and the rollback controller tell apart.
PAUSED, ABORTED, PROGRESSING, HEALTHY, DEGRADED = "paused", "aborted", "progressing", "healthy", "degraded"


# ---------------------------------------------------------------- health.lua, line by line


class LuaError(RuntimeError):
    """Where health.lua itself fails (indexing or comparing nil): Argo CD reports the resource Unknown."""


def _num(value: Any, default: float) -> float:
    # health.lua getNumberValueOrDefault
    return default if value is None else float(value)


def _generation_observed(obj: Mapping[str, Any]) -> bool:
    # isGenerationObserved: a non-numeric observedGeneration (v0.9 hash) counts as observed.
    status = obj.get("status")
    if status is None:
        return False
    try:
        observed = float(status.get("observedGeneration"))
    except (TypeError, ValueError):
        return True
    generation = (obj.get("metadata") or {}).get("generation")
    if generation is None:  # `observedGeneration > obj.metadata.generation`: number compared with nil
        raise LuaError("attempt to compare number with nil")
    return True if observed > float(generation) else observed == float(generation)


def _workload_generation_observed(obj: Mapping[str, Any]) -> bool:
    # isWorkloadGenerationObserved: only for workloadRef rollouts with annotations.
    annotations = (obj.get("metadata") or {}).get("annotations")
    if (obj.get("spec") or {}).get("workloadRef") is None or annotations is None:
        return True

    def num(v: Any) -> float | None:
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    return num(annotations.get("rollout.argoproj.io/workload-generation")) == num(
        (obj.get("status") or {}).get("workloadObservedGeneration")
    )


def rollout_health(obj: Mapping[str, Any]) -> dict[str, str]:
    """Argo CD's health of a Rollout object: `{"status", "message"}` exactly as health.lua returns them
    (LuaError where the script itself fails)."""
    if not _generation_observed(obj) or not _workload_generation_observed(obj):
        return {"status": "Progressing", "message": "Waiting for rollout spec update to be observed"}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if status.get("phase") is not None:
        phase = str(status["phase"])
        return {"status": "Suspended" if phase == "Paused" else phase, "message": str(status.get("message") or "")}
    if status.get("conditions") is None:  # ipairs(obj.status.conditions)
        raise LuaError("bad argument #1 to ipairs (table expected, got nil)")
    for cond in status["conditions"]:
        if cond.get("type") == "InvalidSpec":
            return {"status": "Degraded", "message": str(cond.get("message") or "")}
        if cond.get("type") == "Progressing" and cond.get("reason") in ("RolloutAborted", "ProgressDeadlineExceeded"):
            return {"status": "Degraded", "message": str(cond.get("message") or "")}
    if status.get("pauseConditions") or spec.get("paused"):
        return {"status": "Suspended", "message": "Rollout is paused"}
    if status.get("currentPodHash") is None:
        return {"status": "Progressing", "message": "Waiting for rollout to finish: status has not been reconciled."}
    desired = _num(spec.get("replicas"), 1)
    replicas = _num(status.get("replicas"), 0)
    updated = _num(status.get("updatedReplicas"), 0)
    available = _num(status.get("availableReplicas"), 0)
    if updated < desired:
        return {"status": "Progressing", "message": "Waiting for roll out to finish: More replicas need to be updated"}
    if available < updated:
        return {
            "status": "Progressing",
            "message": "Waiting for roll out to finish: updated replicas are still becoming available",
        }
    # getStableRS: status.stableRS when set (even ""), else status.canary.stableRS (nil when absent), else "".
    canary = status.get("canary")
    stable = (
        status["stableRS"] if status.get("stableRS") is not None else "" if canary is None else canary.get("stableRS")
    )
    strategy = spec.get("strategy")
    if strategy is None:  # obj.spec.strategy.blueGreen
        raise LuaError("attempt to index a nil value")
    if strategy.get("blueGreen") is not None:
        if (status.get("blueGreen") or {}).get("activeSelector") != status.get("currentPodHash"):
            return {"status": "Progressing", "message": "active service cutover pending"}
        if stable != "" and stable != status.get("currentPodHash"):
            return {"status": "Progressing", "message": "waiting for analysis to complete"}
    elif strategy.get("canary") is not None:
        if replicas > updated:
            return {
                "status": "Progressing",
                "message": "Waiting for roll out to finish: old replicas are pending termination",
            }
        if stable == "" or stable != status.get("currentPodHash"):
            return {"status": "Progressing", "message": "Waiting for rollout to finish steps"}
    return {"status": "Healthy", "message": ""}


HEALTH_CODES = (
    "Unknown",
    "Progressing",
    "Suspended",
    "Healthy",
    "Degraded",
    "Missing",
)  # lua.go isValidHealthStatusCode
HOOK_FINALIZER = "argocd.argoproj.io/hook-finalizer"  # gitops-engine/pkg/sync/hook/hook.go


def argocd_health(obj: Mapping[str, Any]) -> dict[str, str]:
    """The health Argo CD records for a Rollout object: health.lua's, as GetResourceHealth/ExecuteHealthLua
    treat it. Keys as HealthStatus marshals them (`message` omitted when empty, `omitempty`)."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp") is not None and HOOK_FINALIZER not in (meta.get("finalizers") or []):
        health = {"status": "Progressing", "message": "Pending deletion"}
    else:
        try:
            health = rollout_health(obj)
        except LuaError as exc:
            health = {"status": "Unknown", "message": str(exc)}
        if health["status"] not in HEALTH_CODES:
            health = {"status": "Unknown", "message": "Lua returned an invalid health status"}
    return {k: v for k, v in health.items() if v}


# ---------------------------------------------------------------- reading it from Argo CD


def phase_of(health: Mapping[str, Any]) -> str:
    """The canary phase a Rollout's Argo CD health means: paused, aborted, progressing, healthy, degraded."""
    status, message = str(health.get("status") or ""), str(health.get("message") or "")
    if status == "Suspended":
        return PAUSED
    if status == "Degraded":
        # v1.x phase message "RolloutAborted: ..." (rolloututil.go); v0.x condition message "Rollout is aborted".
        aborted = message.startswith("RolloutAborted") or message == "Rollout is aborted"
        return ABORTED if aborted else DEGRADED
    return {"Progressing": PROGRESSING, "Healthy": HEALTHY}.get(status, status.lower() or "unknown")


class _TreeClient(ArgoCDClient):
    def tree(self, app: str) -> httpx.Response:
        with self._client() as c:
            return c.get(f"/api/v1/applications/{app}/resource-tree")


def live_rollout(
    cfg: ArgoCDConfig | None, env: str, transport: httpx.BaseTransport | None = None
) -> dict[str, Any] | None:
    """The env's Rollout as Argo CD reports it: `{"app", "name", "health", "phase"}`, `{"app", "error"}` when
    Argo CD could not be asked, or None (no API configured, or the app has no Rollout: a Deployment env)."""
    if cfg is None:
        return None
    app = cfg.app_name.format(env=env)
    try:
        resp = _TreeClient(cfg, transport).tree(app)
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return {"app": app, "error": str(exc)}
    if resp.status_code != 200:
        return {"app": app, "error": f"HTTP {resp.status_code}: {resp.text[:200]}"}
    try:
        tree = resp.json()
    except ValueError:
        tree = None
    # ApplicationTree: `nodes` is omitted when empty (omitempty); anything but an object is not one.
    nodes = tree.get("nodes") if isinstance(tree, dict) else None
    if not isinstance(tree, dict) or not isinstance(nodes, list | None):
        return {"app": app, "error": f"not an ApplicationTree: {resp.text[:200]}"}
    for node in nodes or []:
        if node.get("group") == ROLLOUT_GROUP and node.get("kind") == ROLLOUT_KIND:
            health = dict(node.get("health") or {})
            return {"app": app, "name": node.get("name"), "health": health, "phase": phase_of(health)}
    return None
