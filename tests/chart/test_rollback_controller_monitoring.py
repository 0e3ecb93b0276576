"""charts/rollback-controller watched: its ServiceMonitor survives Argo CD's label tracking, its alerts
pass the manifest policies and their promtool cases, and every alert has a runbook."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from pipeline.checks import manifests, policy
from pipeline.runtime.tools import require
from tests.chart.conftest import by_kind

APP_VALUES = Path("environments/argocd/rollback-controller-values.yaml")
NAMESPACE = "llm-rollback"


def _docs(repo_root: Path, *sets: str) -> list[dict[str, Any]]:
    argv = [require("helm"), "template", "rollback-controller", str(repo_root / "charts/rollback-controller")]
    argv += ["--namespace", NAMESPACE, "-f", str(repo_root / APP_VALUES)]
    for s in sets:
        argv += ["--set", s]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _violations(repo_root: Path, docs: list[dict[str, Any]], rules: list[str]) -> dict[str, list[str]]:
    dirs = [repo_root / "policies/manifests", repo_root / "policies/lib"]
    params = policy.load_params(repo_root / "policies/params.yaml", "rollback-controller")
    engine = policy.compile_engine(dirs, {"params": params})
    return policy.evaluate_by_rule(engine, {"kind": "List", "items": docs}, rules)


def test_servicemonitor_selects_the_service_after_argocd_rewrites_its_instance_label(repo_root: Path) -> None:
    docs = _docs(repo_root)
    (sm,) = by_kind(docs, "ServiceMonitor")
    (svc,) = by_kind(docs, "Service")
    svc["metadata"]["labels"]["app.kubernetes.io/instance"] = "rollback-controller-app"  # what Argo CD leaves
    selector = sm["spec"]["selector"]["matchLabels"]
    assert "app.kubernetes.io/instance" not in selector
    assert selector.items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics" and endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    # Prometheus (monitoring namespace) may reach that port.
    (netpol,) = by_kind(docs, "NetworkPolicy")
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == endpoint["port"])
    rule = netpol["spec"]["ingress"][0]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert {"port": port, "protocol": "TCP"} in rule["ports"]
    # Both monitoring objects carry the label kube-prometheus-stack selects them by.
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert by_kind(docs, kind)[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_the_manifest_policies_pass_and_tracking_catches_an_instance_selector(repo_root: Path) -> None:
    docs = _docs(repo_root)
    found = _violations(repo_root, docs, ["tracking", "alerts", "labels", "network"])
    assert found == {"tracking": [], "alerts": [], "labels": [], "network": []}, found
    (sm,) = by_kind(docs, "ServiceMonitor")
    sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] = "rollback-controller"
    msgs = _violations(repo_root, docs, ["tracking"])["tracking"]
    assert any(m.startswith("ServiceMonitor <rollback-controller> selects on app.kubernetes.io/instance") for m in msgs)


def test_promtool_cases_pass_on_the_rendered_rules(repo_root: Path, tmp_path: Path) -> None:
    rules = manifests.extract_rules(_docs(repo_root))
    assert rules is not None
    assert manifests.check_runbooks("rollback-controller", rules, repo_root) == []
    (tmp_path / "prometheus-rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    tests = manifests.write_alert_tests(
        "rollback-controller", rules, tmp_path, repo_root / "charts/rollback-controller/tests", namespace=NAMESPACE
    )
    assert [t.name for t in tests] == ["controller.test.yaml"]
    promtool = require("promtool")
    proc = subprocess.run([promtool, "test", "rules", *map(str, tests)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # The cases cover every alert: each is expected to fire somewhere.
    cases = yaml.safe_load(tests[0].read_text())["tests"]
    fired = {t["alertname"] for c in cases for t in c["alert_rule_test"] if t.get("exp_alerts")}
    assert fired == {r["alert"] for r in manifests.alert_rules(rules)}


def test_a_stricter_window_than_the_cases_assume_fails_them(repo_root: Path, tmp_path: Path) -> None:
    """The promtool cases are not vacuous: a token warning of 1 day misses the 3-day token."""
    rules = manifests.extract_rules(_docs(repo_root, "monitoring.alerts.tokenExpiryWarningDays=1"))
    assert rules is not None
    (tmp_path / "prometheus-rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    tests = manifests.write_alert_tests(
        "rollback-controller", rules, tmp_path, repo_root / "charts/rollback-controller/tests", namespace=NAMESPACE
    )
    proc = subprocess.run(
        [require("promtool"), "test", "rules", *map(str, tests)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0 and "RollbackControllerArgoCDTokenExpiring" in proc.stdout + proc.stderr


def test_monitoring_objects_can_be_turned_off(repo_root: Path) -> None:
    docs = _docs(repo_root, "monitoring.serviceMonitor.enabled=false", "monitoring.prometheusRule.enabled=false")
    assert not by_kind(docs, "ServiceMonitor") and not by_kind(docs, "PrometheusRule")
