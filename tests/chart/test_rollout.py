"""rollout.enabled: the model-serving workload as an Argo Rollouts Rollout with its AnalysisTemplate.

Real `helm template` of the chart with each env's files; the CRD schemas are the repository's vendored copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.checks import canary, validate
from pipeline.rollout import analysis, pod_budget
from pipeline.runtime.pod import local_profile
from tests.chart.conftest import Template, by_kind, env_files

ENVS = ("dev", "staging", "prod")
ARGO = "argoproj.io/v1alpha1"


def _env_values(repo_root: Path, env: str) -> dict[str, Any]:
    return dict(yaml.safe_load((repo_root / "environments" / env / "values.yaml").read_text()) or {})


def _replica_range(repo_root: Path, env: str) -> range:
    """What the env's values let the autoscaler (or replicaCount) set, read from the values, not the render."""
    values = analysis.merged_values(repo_root, env)
    scaling = values["autoscaling"]
    if scaling["mode"] == "none":
        return range(values["replicaCount"], values["replicaCount"] + 1)
    return range(scaling["minReplicas"], scaling["maxReplicas"] + 1)


def test_rollout_only_when_enabled(repo_root: Path, helm_template: Template) -> None:
    off = helm_template(*env_files(repo_root, "dev"), env="dev")
    assert [d["kind"] for d in off if d["apiVersion"] == ARGO] == []
    assert len(by_kind(off, "Deployment")) == 1
    on = helm_template(*env_files(repo_root, "dev"), sets=("rollout.enabled=true",), env="dev")
    assert by_kind(on, "Deployment") == []
    assert [d["metadata"]["name"] for d in by_kind(on, "Rollout")] == ["llm-service"]
    assert [d["metadata"]["name"] for d in by_kind(on, "AnalysisTemplate")] == ["llm-service-canary"]
    # The same pod template, whichever controller runs it.
    assert by_kind(on, "Rollout")[0]["spec"]["template"] == by_kind(off, "Deployment")[0]["spec"]["template"]


@pytest.mark.parametrize("env", ENVS)
def test_enabled_where_the_env_says_so(repo_root: Path, helm_template: Template, env: str) -> None:
    docs = helm_template(*env_files(repo_root, env), env=env)
    wanted = bool((_env_values(repo_root, env).get("rollout") or {}).get("enabled"))
    assert bool(by_kind(docs, "Rollout")) is wanted
    assert bool(by_kind(docs, "Deployment")) is not wanted
    assert wanted is (env in ("staging", "prod"))


@pytest.mark.parametrize("env", ENVS)
def test_model_pods_never_exceed_replicas(repo_root: Path, helm_template: Template, env: str) -> None:
    """No surge by default: a replica-ratio canary with maxSurge 0 / maxUnavailable 1, for every replica count."""
    docs = helm_template(*env_files(repo_root, env), sets=("rollout.enabled=true",), env=env)
    strategy = by_kind(docs, "Rollout")[0]["spec"]["strategy"]["canary"]
    assert strategy["maxSurge"] == 0 and strategy["maxUnavailable"] == 1
    assert "trafficRouting" not in strategy and "dynamicStableScale" not in strategy
    for replicas in _replica_range(repo_root, env):
        assert pod_budget.peak_pods(strategy, replicas).pods == replicas


def test_gateway_api_routing_with_a_surge_budget(repo_root: Path, helm_template: Template) -> None:
    """surge > 0 and an HTTPRoute: the Gateway API plugin on the chart's own HTTPRoute, canary Service beside it."""
    docs = helm_template(*env_files(repo_root, "prod"), sets=("rollout.enabled=true", "rollout.surge=6"), env="prod")
    rollout = by_kind(docs, "Rollout")[0]
    c = rollout["spec"]["strategy"]["canary"]
    route = by_kind(docs, "HTTPRoute")[0]
    assert c["dynamicStableScale"] is True
    assert c["trafficRouting"]["plugins"]["argoproj-labs/gatewayAPI"] == {
        "httpRoute": route["metadata"]["name"],
        "namespace": "llm-prod",
    }
    backends = [b["name"] for b in route["spec"]["rules"][0]["backendRefs"]]
    assert backends == [c["stableService"], c["canaryService"]]
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    pod_labels = rollout["spec"]["template"]["metadata"]["labels"]
    for name in backends:
        assert services[name]["spec"]["selector"].items() <= pod_labels.items()
    # Each setWeight is preceded by a setCanaryScale of the same weight.
    steps = c["steps"]
    for i, step in enumerate(steps):
        if "setWeight" in step:
            assert steps[i - 1] == {"setCanaryScale": {"weight": step["setWeight"]}}
    # 12 replicas, last weight 50: the abort (stable back to 12 before the canary's 6 leave) needs 6.
    assert pod_budget.peak_pods(c, 12).pods == 18
    assert canary.problems(docs) == []


def test_gateway_api_routing_without_enough_surge_is_refused(repo_root: Path, helm_template: Template) -> None:
    docs = helm_template(*env_files(repo_root, "prod"), sets=("rollout.enabled=true", "rollout.surge=2"), env="prod")
    problems = canary.problems(docs)
    assert len(problems) == 1
    assert "exceed replicas + surge budget 2" in problems[0] and "raise rollout.surge to" in problems[0]


def test_no_router_means_replica_ratio_even_with_surge(repo_root: Path, helm_template: Template) -> None:
    docs = helm_template(
        *env_files(repo_root, "staging"),
        sets=("rollout.enabled=true", "rollout.surge=1", "httpRoute.enabled=false"),
        env="staging",
    )
    c = by_kind(docs, "Rollout")[0]["spec"]["strategy"]["canary"]
    assert (c["maxSurge"], c["maxUnavailable"]) == (1, 0)
    assert "trafficRouting" not in c
    assert pod_budget.peak_pods(c, 4).pods == 5


@pytest.mark.parametrize(("mode", "kind"), [("hpa", "HorizontalPodAutoscaler"), ("keda", "ScaledObject")])
def test_autoscalers_target_the_rollout(repo_root: Path, helm_template: Template, mode: str, kind: str) -> None:
    sets = (f"autoscaling.mode={mode}",)
    for enabled, target in ((True, (ARGO, "Rollout")), (False, ("apps/v1", "Deployment"))):
        docs = helm_template(*env_files(repo_root, "dev"), sets=(*sets, f"rollout.enabled={enabled}"), env="dev")
        ref = by_kind(docs, kind)[0]["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == target
        assert [d for d in docs if d["kind"] == target[1] and d["metadata"]["name"] == ref["name"]]
        if enabled:
            assert "replicas" not in by_kind(docs, "Rollout")[0]["spec"]  # the autoscaler owns the count
        assert canary.problems(docs) == []


def test_selectors_still_match_the_rollout_pods(repo_root: Path, helm_template: Template) -> None:
    docs = helm_template(*env_files(repo_root, "prod"), env="prod")
    labels = by_kind(docs, "Rollout")[0]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        *(s["spec"]["selector"] for s in by_kind(docs, "Service")),
        *(p["spec"]["selector"]["matchLabels"] for p in by_kind(docs, "PodDisruptionBudget")),
        *(n["spec"]["podSelector"]["matchLabels"] for n in by_kind(docs, "NetworkPolicy")),
    ]
    assert len(selectors) >= 4
    for selector in selectors:
        assert selector.items() <= labels.items(), selector


def test_analysis_template_comes_from_values(repo_root: Path, helm_template: Template, tmp_path: Path) -> None:
    """The rendered template and pipeline.rollout.analysis read the same metrics; a changed value shows in both."""
    docs = helm_template(*env_files(repo_root, "prod"), env="prod")
    rendered = analysis.from_template(by_kind(docs, "AnalysisTemplate")[0])
    source = analysis.from_values(analysis.merged_values(repo_root, "prod"))
    assert rendered.metrics == source.metrics
    assert rendered.args["window"] == source.args["window"]
    assert rendered.args["min-requests"] == source.args["min-requests"]
    assert rendered.args["namespace"] == "llm-prod" and rendered.args["canary-release"] is None
    names = {m.name for m in rendered.metrics}
    assert {"canary-requests", "error-ratio", "ttft-p95-ratio", "itl-p95-ratio"} <= names
    release = yaml.safe_load((repo_root / "environments/prod/release.yaml").read_text())["release"]["id"]
    steps = by_kind(docs, "Rollout")[0]["spec"]["strategy"]["canary"]["steps"]
    analysis_steps = [s["analysis"] for s in steps if "analysis" in s]
    assert analysis_steps and all(s["args"] == [{"name": "canary-release", "value": release}] for s in analysis_steps)

    # An env that changes a query, a condition and the window: both readers follow it.
    block = analysis.merged_values(repo_root, "prod")["rollout"]["analysis"]
    block["window"] = "2m"
    block["metrics"][1]["successCondition"] = "result[0] <= 3"
    block["metrics"][1]["failureCondition"] = "result[0] > 3"
    block["metrics"][1]["query"] = (
        'sum(rate(gateway_requests_total{release="{{args.canary-release}}"}[{{args.window}}]))'
    )
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"rollout": {"analysis": block}}))
    docs = helm_template(*env_files(repo_root, "prod"), override, env="prod")
    rendered = analysis.from_template(by_kind(docs, "AnalysisTemplate")[0])
    assert rendered.metrics == analysis.from_values({"rollout": {"analysis": block}}).metrics
    assert rendered.metrics[1].success_condition == "result[0] <= 3"
    assert rendered.args["window"] == "2m"


@pytest.mark.parametrize("env", ENVS)
def test_rendered_argo_objects_validate_against_vendored_schemas(
    repo_root: Path, helm_template: Template, crd_schemas: Path, env: str
) -> None:
    crds = validate.CrdSchemas(str(crd_schemas))
    for surge in ("0", "6"):
        docs = helm_template(
            *env_files(repo_root, env), sets=("rollout.enabled=true", f"rollout.surge={surge}"), env=env
        )
        argo = [d for d in docs if d["apiVersion"] == ARGO]
        assert sorted(d["kind"] for d in argo) == ["AnalysisTemplate", "Rollout"]
        assert [f for d in argo for f in crds.validate(d)] == []


def test_invalid_rollout_field_fails_schema(repo_root: Path, helm_template: Template, crd_schemas: Path) -> None:
    crds = validate.CrdSchemas(str(crd_schemas))
    docs = helm_template(*env_files(repo_root, "prod"), env="prod")
    rollout = by_kind(docs, "Rollout")[0]
    rollout["spec"]["strategy"]["canary"]["dynamicStableScal"] = True
    findings = [str(f) for f in crds.validate(rollout)]
    assert findings and any("dynamicStableScal" in f for f in findings), findings
    template = by_kind(docs, "AnalysisTemplate")[0]
    template["spec"]["metrics"][0]["count"] = [1]
    assert crds.validate(template)


def test_unknown_step_is_refused_by_the_chart(repo_root: Path, helm_template: Template) -> None:
    err = str(
        helm_template(
            *env_files(repo_root, "prod"), sets=("rollout.steps[0].setWeigth=10",), env="prod", expect_ok=False
        )
    )
    assert "/rollout/steps/0" in err and "setWeigth" in err


@pytest.mark.parametrize("surge", ["0", "6"])
def test_every_rendered_kind_is_allowed_by_the_app_project(
    repo_root: Path, helm_template: Template, surge: str
) -> None:
    """Argo CD refuses to sync a namespaced kind its AppProject's namespaceResourceWhitelist does not list."""
    project = yaml.safe_load((repo_root / "environments/argocd/appproject-llm-service.yaml").read_text())
    allowed = {(e["group"], e["kind"]) for e in project["spec"]["namespaceResourceWhitelist"]}
    for env in ENVS:
        docs = helm_template(
            *env_files(repo_root, env), sets=("rollout.enabled=true", f"rollout.surge={surge}"), env=env
        )
        kinds = {(d["apiVersion"].rpartition("/")[0], d["kind"]) for d in docs}
        assert kinds - allowed == set(), env


def test_a_rollout_is_played_locally_as_its_pod(repo_root: Path, helm_template: Template) -> None:
    """smoke/loadtest play an env's pod with podman: a Rollout's pod template is played as a Deployment."""
    docs = helm_template(*env_files(repo_root, "prod"), env="prod")
    pod = local_profile(
        docs, images={}, host_ports={"gateway": {"http": 18080, "internal": 18081}, "vllm": {"vllm": 18000}}
    )
    assert (pod.deployment["apiVersion"], pod.deployment["kind"]) == ("apps/v1", "Deployment")
    assert "strategy" not in pod.deployment["spec"]
    assert any(s.startswith("Rollout llm-service played as a Deployment") for s in pod.substitutions)
    assert by_kind(docs, "Rollout")[0]["kind"] == "Rollout"  # the rendered objects are left as they were
