"""Alerts on the series Prometheus really stores, and Prometheus Operator objects it selects.

The promtool cases (charts/llm-service/tests/*.test.yaml) feed real exporter label sets; this
module runs them per env without the whole render stage, and checks the rendered selectors.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.artifacts.chart_render import helm_template
from pipeline.checks import manifests
from pipeline.runtime.tools import require
from tests.chart.conftest import Template, by_kind, env_files, workload

ENVS = ("dev", "staging", "prod")
MIN = ("vllm.model.id=m/x", "vllm.model.revision=abc", "vllm.model.gated=false")


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in by_kind(docs, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"]]


def _rule(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for r in _rules(docs) if r.get("alert") == name or r.get("record") == name)


@pytest.mark.parametrize("env", ENVS)
def test_promtool_cases_pass_on_each_envs_rules(repo_root: Path, env: str, tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(helm_template(repo_root, env)) if d]
    rules = manifests.extract_rules(docs)
    assert rules is not None
    (tmp_path / "prometheus-rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    tests = manifests.write_alert_tests(env, rules, tmp_path, repo_root / "charts/llm-service/tests")
    assert {t.name for t in tests} >= {"alerts.test.yaml", "gpu.test.yaml", "cost.test.yaml", "slo.test.yaml"}
    proc = subprocess.run(
        [require("promtool"), "test", "rules", *map(str, tests)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_promtool_inputs_use_real_exporter_label_sets(repo_root: Path) -> None:
    """Every DCGM series is the exporter's (honorLabels false); every vLLM/gateway series has target labels."""
    for f in sorted((repo_root / "charts/llm-service/tests").glob("*.test.yaml")):
        for group in yaml.safe_load(f.read_text())["tests"]:
            for s in group["input_series"]:
                series = s["series"]
                if series.startswith("DCGM_"):
                    for label in ("UUID=", "gpu=", "modelName=", "Hostname=", "exported_namespace=", "exported_pod="):
                        assert label in series, f"{f.name}: {series} lacks {label}"
                    assert 'namespace="${NAMESPACE}"' not in series.replace("exported_namespace", "x"), series
                else:
                    for label in ("job=", "instance=", "namespace=", "pod=", "service="):
                        assert label in series, f"{f.name}: {series} lacks target label {label}"
                if series.startswith("vllm:") and "_bucket" in series:
                    assert "model_name=" in series and "engine=" in series, series


def test_gpu_rules_select_the_workload_labels_of_dcgm_exporter(helm_template: Template) -> None:
    docs = helm_template(sets=MIN)
    expr = _rule(docs, "llm:gpu_utilization:avg")["expr"]
    assert 'exported_namespace="llm-dev"' in expr and 'exported_pod=~"llm-service-.*"' in expr
    assert '"namespace", "$1", "exported_namespace"' in expr
    # With honorLabels: true on the exporter's ServiceMonitor the labels keep their names.
    docs = helm_template(
        sets=(*MIN, "monitoring.gpuMetrics.namespaceLabel=namespace", "monitoring.gpuMetrics.podLabel=pod")
    )
    expr = _rule(docs, "llm:gpu_count:sum")["expr"]
    assert 'DCGM_FI_DEV_GPU_UTIL{namespace="llm-dev", pod=~"llm-service-.*"}' in expr


def test_latency_slo_is_on_first_token_and_per_token_latency(repo_root: Path, helm_template: Template) -> None:
    docs = helm_template(*env_files(repo_root, "prod"), env="prod")
    assert _rule(docs, "LLMHighLatencyP95")["expr"] == 'llm:vllm_ttft_seconds:p95_5m{namespace="llm-prod"} > 0.5'
    assert _rule(docs, "LLMHighTPOTP95")["expr"] == 'llm:vllm_tpot_seconds:p95_5m{namespace="llm-prod"} > 0.08'
    tpot = _rule(docs, "llm:vllm_tpot_seconds:p95_5m")["expr"]
    assert "vllm:inter_token_latency_seconds_bucket" in tpot and "vllm:time_per_output_token_seconds_bucket" in tpot


def test_only_the_fast_burn_rate_alert_triggers_rollback(repo_root: Path, helm_template: Template) -> None:
    docs = helm_template(*env_files(repo_root, "prod"), env="prod")
    alerts = [r for r in _rules(docs) if "alert" in r]
    assert [a["alert"] for a in alerts if a["labels"].get("rollback") == "true"] == ["LLMErrorBudgetBurnFast"]
    assert "rollback" not in _rule(docs, "LLMHighErrorRate")["labels"]
    absent = _rule(docs, "LLMRollbackSignalAbsent")
    assert absent["expr"].startswith(
        'absent(gateway_requests_total{namespace="llm-prod", pod=~"llm-service-.*"})\nand on ()'
    )
    assert absent["labels"]["severity"] == "critical"
    assert _rule(docs, "LLMScrapeTargetDown")["expr"].startswith('up{namespace="llm-prod"')
    fast, slow = _rule(docs, "LLMErrorBudgetBurnFast"), _rule(docs, "LLMErrorBudgetBurnSlow")
    assert "ratio_rate5m" in fast["expr"] and "ratio_rate1h" in fast["expr"] and "14.4 * (1 - 0.995)" in fast["expr"]
    assert "ratio_rate30m" in slow["expr"] and "ratio_rate6h" in slow["expr"] and "6 * (1 - 0.995)" in slow["expr"]
    assert (fast["labels"]["severity"], slow["labels"]["severity"]) == ("critical", "warning")
    assert fast["labels"] == {"severity": "critical", "rollback": "true", "env": "prod"}
    assert fast["for"] == "30s" and slow["for"] == "15m"
    assert "gateway_release_errors" in fast["expr"] and "gateway_release_errors" in slow["expr"]
    # Neither judges a release on a handful of requests (monitoring.slo.minRequests in the short window).
    scope = 'gateway_requests_total{namespace="llm-prod", pod=~"llm-service-.*"}'
    assert fast["expr"].endswith(f"and\nsum by (namespace, release) (increase({scope}[5m])) >= 50")
    assert slow["expr"].endswith(f"and\nsum by (namespace, release) (increase({scope}[30m])) >= 50")


def test_min_requests_is_a_value(helm_template: Template) -> None:
    docs = helm_template(sets=(*MIN, "monitoring.slo.minRequests=200"))
    assert _rule(docs, "LLMErrorBudgetBurnFast")["expr"].endswith(">= 200")
    assert _rule(docs, "LLMErrorBudgetBurnSlow")["expr"].endswith(">= 200")
    err = str(helm_template(sets=(*MIN, "monitoring.slo.minRequests=0"), expect_ok=False))
    assert "minRequests" in err


def test_rollback_signal_absent_needs_a_serving_gateway(repo_root: Path, helm_template: Template) -> None:
    """Absence alone is an idle env: the alert also needs vLLM traffic or a ready gateway without a target."""
    expr = _rule(helm_template(*env_files(repo_root, "prod"), env="prod"), "LLMRollbackSignalAbsent")["expr"]
    scope = 'namespace="llm-prod", pod=~"llm-service-.*"'
    assert f"sum(increase(vllm:prompt_tokens_total{{{scope}}}[5m])) > 0" in expr
    assert f'sum(kube_pod_container_status_ready{{{scope}, container="gateway"}}) > 0' in expr
    assert f'unless on ()\n    up{{{scope}, container="gateway"}}' in expr


def test_burn_rate_ratios_are_per_release_and_count_only_the_release_s_errors(
    repo_root: Path, helm_template: Template
) -> None:
    docs = helm_template(*env_files(repo_root, "prod"), env="prod")
    for window in ("5m", "30m", "1h", "6h"):
        num, den = _rule(docs, f"llm:gateway_release_errors:ratio_rate{window}")["expr"].split("\n/\n")
        assert num.startswith("sum by (namespace, release) (") and den.startswith("sum by (namespace, release) (")
        assert 'status=~"5..", cause="release"}' in num and f"[{window}]" in num
        assert "cause" not in den  # every request of the release is the denominator
    # The symptom ratio stays per namespace and counts every 5xx, whatever the cause.
    symptom = _rule(docs, "llm:gateway_errors:ratio_rate5m")["expr"]
    assert "cause" not in symptom and "sum by (namespace) (" in symptom


def test_gateway_runs_with_the_pinned_release_id(repo_root: Path, helm_template: Template) -> None:
    from ruamel.yaml import YAML

    for env in ("dev", "staging", "prod"):
        pins = YAML(typ="safe").load((repo_root / "environments" / env / "release.yaml").read_text())
        docs = helm_template(*env_files(repo_root, env), env=env)
        cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-gateway"))
        assert cm["data"]["GATEWAY_RELEASE"] == pins["release"]["id"]


@pytest.mark.parametrize("bad", ["2m", "5m", "1h", "90s"])
def test_fast_burn_for_is_at_most_a_minute(helm_template: Template, bad: str) -> None:
    with pytest.raises(Exception, match="fastBurnFor"):
        helm_template(sets=(*MIN, f"monitoring.slo.fastBurnFor={bad}"))


@pytest.mark.parametrize("env", ENVS)
def test_servicemonitors_select_services_on_labels_argocd_never_rewrites(
    repo_root: Path, helm_template: Template, env: str
) -> None:
    """Argo CD's label tracking sets app.kubernetes.io/instance on every object it syncs to the
    Application's name (llm-service-<env>, not the release llm-service): the ServiceMonitors must still
    select their Service after that rewrite; pods are not rewritten, so pod selectors stay as they are."""
    docs = helm_template(*env_files(repo_root, env), env=env)
    services = by_kind(docs, "Service")
    for svc in services:  # what Argo CD leaves on the live Service
        svc["metadata"]["labels"]["app.kubernetes.io/instance"] = f"llm-service-{env}"
    for sm in by_kind(docs, "ServiceMonitor"):
        selector = sm["spec"]["selector"]["matchLabels"]
        assert "app.kubernetes.io/instance" not in selector
        assert selector["llm.example.com/instance"] == "llm-service"
        selected = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert len(selected) == 1, (sm["metadata"]["name"], selector)
        port = sm["spec"]["endpoints"][0]["port"]
        assert port in {p["name"] for p in selected[0]["spec"]["ports"]}
    # Pods carry the chart's own label too, and the Services still select them on the Deployment's
    # (immutable) selector, so an upgrade never leaves a Service without endpoints.
    dep = workload(docs)
    assert dep["spec"]["template"]["metadata"]["labels"]["llm.example.com/instance"] == "llm-service"
    for svc in services:
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_selector_labels_on_servicemonitors_and_prometheusrule(helm_template: Template) -> None:
    kinds = ("ServiceMonitor", "PrometheusRule")
    docs = helm_template(sets=MIN)
    selected = [d for d in docs if d["kind"] in kinds]
    assert len(selected) == 3
    assert all(d["metadata"]["labels"]["release"] == "kube-prometheus-stack" for d in selected)
    docs = helm_template(
        sets=(*MIN, "monitoring.selectorLabels.release=monitoring", "monitoring.prometheusRule.labels.role=alert-rules")
    )
    assert all(d["metadata"]["labels"]["release"] == "monitoring" for d in docs if d["kind"] in kinds)
    assert by_kind(docs, "PrometheusRule")[0]["metadata"]["labels"]["role"] == "alert-rules"
