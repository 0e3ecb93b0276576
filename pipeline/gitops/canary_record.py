"""The canary record of an env in git: the plan its Rollout follows and the state of the last release change.

`environments/<env>/rollout.yaml` is written by `promote` (state `progressing`, or `initial` when the env
had no release yet) and by a rollback (state `rolled_back`), in the same commit as the pins, so `git log`
shows which release moved from → to through which steps. Argo CD does not read this file (it is not one of
the Application's valueFiles): the Rollout's steps come from the chart's values + the env's values.yaml,
and the plan recorded here is derived from exactly those (`pipeline.rollout.analysis.merged_values`), so
the record describes the Rollout and can never steer it. Whether the canary is paused or aborted right
now is the cluster's state: `pipeline.gitops.argocd_rollout` reads it from Argo CD.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.gitops.repo import GitOpsRepo, dump_yaml, load_yaml_text
from pipeline.rollout import analysis

# The Application's Helm release name (environments/argocd/applicationset-llm-service.yaml `releaseName`)
# and the chart's name: together they give the Rollout's and AnalysisTemplate's names (llm-service.fullname).
RELEASE_NAME = "llm-service"
CHART_NAME = "llm-service"
# Git states of the record (the live phase comes from Argo CD).
PROGRESSING, INITIAL, ROLLED_BACK = "progressing", "initial", "rolled_back"
HEADER = (
    "# Canary record of this env: written by `python -m pipeline promote` and by rollbacks, in the same commit\n"
    "# as the pins. Not a values file (Argo CD does not read it): the Rollout's steps come from the chart's\n"
    "# values + values.yaml, and `plan` is derived from exactly those. Live phase: `python -m pipeline status`.\n"
)


class RolloutPlanError(ValueError):
    """The env's rollout values cannot be turned into the plan the chart renders; the message says where."""


def rollout_path(env: str) -> str:
    return f"environments/{env}/rollout.yaml"


def fullname(values: Mapping[str, Any]) -> str:
    """The chart's `llm-service.fullname` for the Application's release name."""
    if values.get("fullnameOverride"):
        return str(values["fullnameOverride"])[:63].rstrip("-")
    name = str(values.get("nameOverride") or CHART_NAME)
    full = RELEASE_NAME if name in RELEASE_NAME else f"{RELEASE_NAME}-{name}"
    return full[:63].rstrip("-")


def _env_values(root: Path, env: str) -> dict[str, Any]:
    path = root / analysis.ENV_VALUES.format(env=env)
    if not path.is_file():
        return {}
    doc = load_yaml_text(path.read_text(), analysis.ENV_VALUES.format(env=env)) or {}
    if not isinstance(doc, Mapping):
        raise RolloutPlanError(f"{analysis.ENV_VALUES.format(env=env)}: expected a mapping at the top level")
    return dict(doc)


def values_for(root: Path, env: str) -> dict[str, Any]:
    """The env's merged values (chart + env delta, as Helm merges them) from a checkout of the GitOps repo."""
    if not (root / analysis.CHART_VALUES).is_file():
        # Without the chart's values only the env delta is known; enough to see whether it enables the rollout.
        return _env_values(root, env)
    try:
        return analysis.merged_values(root, env)
    except analysis.AnalysisError as exc:
        raise RolloutPlanError(str(exc)) from exc


def enabled(values: Mapping[str, Any]) -> bool:
    return bool((values.get("rollout") or {}).get("enabled"))


def plan(root: Path, env: str, canary_release: str) -> dict[str, Any] | None:
    """The canary plan the env's Rollout follows for `canary_release` (None: the env has no rollout).

    Steps as charts/llm-service/templates/rollout-llm.yaml renders them; the analysis as the AnalysisTemplate
    carries it (metric names, conditions, limits; the queries stay in the values, their one source)."""
    values = values_for(root, env)
    if not enabled(values):
        return None
    if not (root / analysis.CHART_VALUES).is_file():
        raise RolloutPlanError(
            f"environments/{env}/values.yaml enables rollout but {analysis.CHART_VALUES} is not in the GitOps "
            "repository: its steps and analysis cannot be derived"
        )
    ro = values.get("rollout") or {}
    surge = int(ro.get("surge") or 0)
    router = "gatewayAPI" if (values.get("httpRoute") or {}).get("enabled") and surge > 0 else "replicas"
    try:
        an = analysis.from_values(values)
    except analysis.AnalysisError as exc:
        raise RolloutPlanError(f"environments/{env}: rollout.analysis: {exc}") from exc
    problems = analysis.validate(an)
    if problems:
        raise RolloutPlanError(f"environments/{env}: rollout.analysis: {'; '.join(problems)}")
    template = f"{fullname(values)}-canary"
    return {
        "strategy": "canary",
        "routing": router,
        "surge": surge,
        "steps": render_steps(ro.get("steps"), router == "gatewayAPI", template, canary_release),
        "analysis": {
            "template": template,
            "args": {k: v for k, v in {**an.args, "canary-release": canary_release}.items() if v is not None},
            "metrics": [
                {
                    "name": m.name,
                    "successCondition": m.success_condition,
                    "failureCondition": m.failure_condition,
                    "interval": m.interval,
                    "count": m.count,
                    "failureLimit": m.failure_limit,
                    "consecutiveSuccessLimit": m.consecutive_success_limit,
                    "inconclusiveLimit": m.inconclusive_limit,
                }
                for m in an.metrics
            ],
        },
        "source": [str(analysis.CHART_VALUES), analysis.ENV_VALUES.format(env=env)],
    }


def render_steps(steps: Any, gateway_api: bool, template: str, canary_release: str) -> list[dict[str, Any]]:
    """`rollout.steps` as the Rollout gets them (the chart's `range $r.steps`; any other step fails there too)."""
    if not isinstance(steps, list) or not steps:
        raise RolloutPlanError("rollout.steps: no steps (the Rollout would need at least one)")
    out: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping):
            raise RolloutPlanError(f"rollout.steps[{i}] must be one of setWeight, pause, analysis (got {step!r})")
        if "setWeight" in step:
            if gateway_api:
                out.append({"setCanaryScale": {"weight": step["setWeight"]}})
            out.append({"setWeight": step["setWeight"]})
        elif "pause" in step:
            out.append({"pause": dict(step["pause"] or {})})
        elif "analysis" in step:
            out.append(
                {
                    "analysis": {
                        "templates": [{"templateName": template}],
                        "args": [{"name": "canary-release", "value": canary_release}],
                    }
                }
            )
        else:
            raise RolloutPlanError(f"rollout.steps[{i}] must be one of setWeight, pause, analysis (got {dict(step)})")
    return out


def steps_line(steps: Sequence[Mapping[str, Any]]) -> str:
    """`setWeight 10 → analysis → setWeight 50 → analysis → 100 %` (setCanaryScale follows its setWeight)."""
    parts = []
    for step in steps:
        if "setWeight" in step:
            parts.append(f"setWeight {step['setWeight']}")
        elif "pause" in step:
            dur = (step["pause"] or {}).get("duration")
            parts.append(f"pause {dur}" if dur else "pause (until promoted by hand)")
        elif "analysis" in step:
            parts.append("analysis")
    return " → ".join([*parts, "100 %"])


def record(
    state: str,
    from_id: str | None,
    to_id: str,
    at: str,
    by: str,
    canary: Mapping[str, Any] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The document written to rollout.yaml."""
    doc: dict[str, Any] = {"state": state, "release": {"from": from_id, "to": to_id}, "at": at, "by": by}
    doc.update({k: v for k, v in extra.items() if v is not None})
    if canary is not None:
        doc["plan"] = dict(canary)
    return doc


def write(repo: GitOpsRepo, env: str, doc: Mapping[str, Any]) -> None:
    path = repo.file(rollout_path(env))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + dump_yaml(_plain(doc)))


def read(repo: GitOpsRepo, env: str) -> dict[str, Any] | None:
    """The env's canary record at the work copy's HEAD state (None: the env never promoted through a canary)."""
    path = repo.file(rollout_path(env))
    if not path.is_file():
        return None
    doc = load_yaml_text(path.read_text(), rollout_path(env)) or {}
    return _plain(doc) if isinstance(doc, Mapping) else None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
