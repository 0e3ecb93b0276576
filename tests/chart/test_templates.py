"""Rendered chart: layout conventions, release pins, toggles, env deltas."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.gitops.release import Release
from tests.chart.conftest import Template, by_kind, env_files, workload

ENVS = ("dev", "staging", "prod")
MIN = ("vllm.model.id=m/x", "vllm.model.revision=abc", "vllm.model.gated=false")


def test_one_resource_per_template_named_by_kind(chart: Path, helm_template: Template) -> None:
    # Turn every toggle on so every template renders.
    docs_sets = (
        *MIN,
        "autoscaling.mode=keda",
        "ingress.enabled=true",
        "httpRoute.enabled=true",
        "externalSecret.enabled=true",
        "vllm.modelCache.type=pvc",
    )
    helm_template(sets=docs_sets)
    for tpl in (chart / "templates").glob("*.yaml"):
        kind_part, _, component = tpl.stem.partition("-")
        assert component, f"{tpl.name} is not <kind>-<component>.yaml"
        text = tpl.read_text()
        assert len(re.findall(r"(?m)^kind: ", text)) == 1, f"{tpl.name} holds more than one resource"
        kind = re.search(r"(?m)^kind: (\w+)", text)
        assert kind and kind.group(1).lower() == kind_part, f"{tpl.name} renders a {kind and kind.group(1)}"


def test_helpers_are_commented(chart: Path) -> None:
    text = (chart / "templates" / "_helpers.tpl").read_text()
    defines = re.findall(r'\{\{- define "([^"]+)" -\}\}', text)
    assert defines and all(d.startswith("llm-service.") for d in defines)
    for name in defines:
        assert re.search(r"\{\{/\* " + re.escape(name) + r": .+\*/\}\}\n\{\{- define \"" + re.escape(name), text), name


@pytest.mark.parametrize("env", ENVS)
def test_standard_labels_and_security(repo_root: Path, helm_template: Template, env: str) -> None:
    docs = helm_template(*env_files(repo_root, env), env=env)
    for d in docs:
        labels = d["metadata"]["labels"]
        for key in ("name", "instance", "version", "component", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels, (d["kind"], key)
    pod = workload(docs)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"]["drop"] == ["ALL"]
    # Only the gateway port is exposed by the main Service.
    svc = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == "llm-service")
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]


def test_model_id_and_revision_required(helm_template: Template) -> None:
    assert "vllm.model.id must be set" in helm_template(sets=("vllm.model.revision=abc",), expect_ok=False)
    assert "vllm.model.revision must be set" in helm_template(sets=("vllm.model.id=m/x",), expect_ok=False)


def test_prod_requires_digests(repo_root: Path, helm_template: Template) -> None:
    err = helm_template(*env_files(repo_root, "prod"), sets=("gateway.image.digest=",), expect_ok=False, env="prod")
    assert "gateway.image.digest must be set" in err


def test_release_pins_from_release_model(repo_root: Path, helm_template: Template, tmp_path: Path) -> None:
    rel = Release(
        id="0.2.0+gabc1234",
        commit="abc1234",
        chart_version="0.1.0",
        gateway_digest="sha256:" + "a" * 64,
        vllm_digest="sha256:" + "b" * 64,
        model_revision="rev-42",
    )
    pins = tmp_path / "release.yaml"
    pins.write_text(yaml.safe_dump(rel.to_values()))
    docs = helm_template(repo_root / "environments/prod/values.yaml", pins, env="prod")
    pod = workload(docs)["spec"]["template"]
    images = {c["name"]: c["image"] for c in pod["spec"]["containers"]}
    assert images == {
        "gateway": "registry.example.com/llm/gateway@sha256:" + "a" * 64,
        "vllm": "registry.example.com/llm/vllm@sha256:" + "b" * 64,
    }
    vllm = next(c for c in pod["spec"]["containers"] if c["name"] == "vllm")
    assert "--revision=rev-42" in vllm["args"]
    assert pod["metadata"]["annotations"]["llm.example.com/release-id"] == "0.2.0+gabc1234"


def test_tag_defaults_to_app_version(chart: Path, helm_template: Template) -> None:
    app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    docs = helm_template(sets=MIN)
    images = [c["image"] for c in workload(docs)["spec"]["template"]["spec"]["containers"]]
    assert all(i.endswith(f":{app_version}") for i in images)


def test_env_release_pins_are_valid_and_identical(repo_root: Path) -> None:
    pins = [yaml.safe_load((repo_root / "environments" / e / "release.yaml").read_text()) for e in ENVS]
    assert pins[0] == pins[1] == pins[2]
    Release.from_values(pins[0])  # validates the digests


def _rule(docs: list[dict[str, Any]], alert: str) -> dict[str, Any]:
    groups = by_kind(docs, "PrometheusRule")[0]["spec"]["groups"]
    return next(r for g in groups for r in g["rules"] if r.get("alert") == alert)


@pytest.mark.parametrize(("env", "threshold"), [("dev", "0.05"), ("staging", "0.02"), ("prod", "0.01")])
def test_error_rate_alert_is_a_symptom_and_the_burn_rate_routes_to_rollback(
    repo_root: Path, helm_template: Template, env: str, threshold: str
) -> None:
    docs = helm_template(*env_files(repo_root, env), env=env)
    rule = _rule(docs, "LLMHighErrorRate")
    assert rule["labels"] == {"severity": "critical", "env": env}
    assert rule["expr"].endswith(f"> {threshold}")
    assert _rule(docs, "LLMErrorBudgetBurnFast")["labels"] == {"severity": "critical", "rollback": "true", "env": env}


def test_every_alert_has_runbook_page(repo_root: Path, helm_template: Template) -> None:
    docs = helm_template(*env_files(repo_root, "prod"), env="prod")
    groups = by_kind(docs, "PrometheusRule")[0]["spec"]["groups"]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "LLMHighErrorRate",
        "LLMHighLatencyP95",
        "LLMGPUUnderutilized",
        "LLMGPUSaturated",
        "LLMCostIncrease",
        "LLMHighTTFTP95",
        "LLMKVCacheSaturated",
        "LLMQueueDepthHigh",
        "LLMHighTPOTP95",
        "LLMErrorBudgetBurnFast",
        "LLMErrorBudgetBurnSlow",
        "LLMRollbackSignalAbsent",
        "LLMScrapeTargetDown",
    }
    for a in alerts:
        assert set(a["annotations"]) >= {"summary", "description", "runbook_url"}
        assert a["labels"]["severity"] in {"info", "warning", "critical"}
        assert (repo_root / "docs/runbooks" / f"{a['alert']}.md").is_file()


def test_autoscaling_toggles(helm_template: Template) -> None:
    keda = helm_template(sets=(*MIN, "autoscaling.mode=keda"))
    so = by_kind(keda, "ScaledObject")[0]
    assert "vllm:num_requests_waiting" in so["spec"]["triggers"][0]["metadata"]["query"]
    assert "replicas" not in workload(keda)["spec"]
    hpa = helm_template(sets=(*MIN, "autoscaling.mode=hpa"))
    assert by_kind(hpa, "HorizontalPodAutoscaler") and not by_kind(hpa, "ScaledObject")
    none = helm_template(sets=MIN)
    assert not by_kind(none, "HorizontalPodAutoscaler") and not by_kind(none, "ScaledObject")


def test_exposure_and_secret_toggles(helm_template: Template) -> None:
    off = helm_template(sets=MIN)
    assert not by_kind(off, "Ingress") and not by_kind(off, "HTTPRoute") and not by_kind(off, "ExternalSecret")
    on = helm_template(sets=(*MIN, "ingress.enabled=true", "httpRoute.enabled=true", "externalSecret.enabled=true"))
    ing = by_kind(on, "Ingress")[0]
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert by_kind(on, "HTTPRoute")[0]["spec"]["rules"][0]["timeouts"]["request"] == "300s"
    es = by_kind(on, "ExternalSecret")[0]
    env = next(c for c in workload(on)["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway")["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == es["spec"]["target"]["name"]
    assert not by_kind(on, "Secret"), "secret values never render into manifests"


def test_spot_pool_handling(repo_root: Path, helm_template: Template) -> None:
    pod = workload(helm_template(*env_files(repo_root, "dev")))["spec"]["template"]["spec"]
    assert any(t["key"] == "cloud.example.com/spot" for t in pod["tolerations"])
    pref = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pref[0]["preference"]["matchExpressions"][0]["values"] == ["spot"]
    assert pod["terminationGracePeriodSeconds"] == 25
    prod = workload(helm_template(*env_files(repo_root, "prod"), env="prod"))["spec"]["template"]["spec"]
    assert "affinity" not in prod and prod["terminationGracePeriodSeconds"] == 360
    assert prod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "DoNotSchedule"


def test_rbac_configmap_shape(helm_template: Template) -> None:
    cm = next(c for c in by_kind(helm_template(sets=MIN), "ConfigMap") if c["metadata"]["name"].endswith("-rbac"))
    rbac = yaml.safe_load(cm["data"]["rbac.yaml"])
    assert rbac["tiers"]["standard"] == {"requests_per_minute": 600, "tokens_per_minute": 600000}
    assert rbac["roles"]["user"]["tier"] == "standard"


def test_hf_token_external_secret_follows_the_gateway_one(repo_root: Path, helm_template: Template) -> None:
    """With externalSecret.enabled the Hugging Face token Secret comes from the store too, under exactly
    the name and key the vLLM container reads HF_TOKEN from."""
    sets = (*MIN, "externalSecret.enabled=true", "vllm.hfToken.secretName=hf-token", "vllm.hfToken.secretKey=hf")
    docs = helm_template(sets=sets)
    es = {e["metadata"]["name"]: e for e in by_kind(docs, "ExternalSecret")}
    assert set(es) == {"llm-service-gateway", "hf-token"}
    hf = es["hf-token"]
    assert hf["spec"]["target"] == {"name": "hf-token", "creationPolicy": "Owner"}
    assert hf["spec"]["data"] == [{"secretKey": "hf", "remoteRef": {"key": "llm/hf-token", "property": "token"}}]
    assert hf["spec"]["secretStoreRef"] == es["llm-service-gateway"]["spec"]["secretStoreRef"]
    vllm = next(c for c in workload(docs)["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm")
    ref = next(e for e in vllm["env"] if e["name"] == "HF_TOKEN")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "hf-token", "key": "hf"}
    # Same gate as the gateway's: no ExternalSecret without externalSecret.enabled or without a token Secret.
    off = helm_template(sets=(*MIN, "vllm.hfToken.secretName=hf-token"))
    assert not by_kind(off, "ExternalSecret")
    no_token = helm_template(sets=(*MIN, "externalSecret.enabled=true"))
    assert [e["metadata"]["name"] for e in by_kind(no_token, "ExternalSecret")] == ["llm-service-gateway"]
    # prod enables it, with its own remote key.
    prod = helm_template(*env_files(repo_root, "prod"), env="prod")
    prod_hf = next(e for e in by_kind(prod, "ExternalSecret") if e["metadata"]["name"] == "hf-token")
    assert prod_hf["spec"]["data"][0]["remoteRef"] == {"key": "llm/prod/hf-token", "property": "token"}


def test_keda_cooldown_only_governs_scale_to_zero(chart: Path, helm_template: Template) -> None:
    """KEDA waits cooldownPeriod only before scaling to 0 (keda.sh ScaledObject spec); this chart never
    scales to zero, so scale-down between replicas is paced by the HPA behavior KEDA passes on."""
    so = by_kind(
        helm_template(sets=(*MIN, "autoscaling.mode=keda", "autoscaling.keda.cooldownPeriod=0")), "ScaledObject"
    )[0]
    assert so["spec"]["minReplicaCount"] >= 1 and "idleReplicaCount" not in so["spec"]
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 900,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
    }
    values = (chart / "values.yaml").read_text()
    doc = values[: values.index("    cooldownPeriod:")].rsplit("\n", 2)[-2]
    assert "only to scaling to 0" in doc and "scaleDownStabilizationSeconds" in doc, doc
