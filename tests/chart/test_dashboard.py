"""The Grafana dashboard the chart ships: one uid per namespace, each panel in one unit, burn-rate
panels and deploy annotations (the series they read: tests/gateway/test_dashboard_metrics.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.chart.conftest import Template, by_kind, env_files

# Grafana: a dashboard uid is at most 40 characters of [a-zA-Z0-9_-].
UID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard"))
    return dict(json.loads(cm["data"]["llm-service.json"]))


def panels(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in d["panels"]}


def exprs(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel["targets"]]


def test_uid_and_title_are_unique_per_namespace(helm_template: Template, repo_root: Path) -> None:
    seen = {}
    for env in ("dev", "staging", "prod"):
        d = dashboard(helm_template(*env_files(repo_root, env), env=env))
        assert UID_RE.match(d["uid"]), d["uid"]
        seen[d["uid"]] = env
        assert d["title"] == f"LLM service (llm-{env})"
        ns = next(v for v in d["templating"]["list"] if v["name"] == "namespace")
        assert ns["current"]["value"] == f"llm-{env}"
    assert len(seen) == 3


def test_long_namespaces_keep_the_uid_within_grafana_s_limit_and_distinct(chart: Path) -> None:
    import subprocess

    import yaml

    from pipeline.runtime.tools import require

    def uid(namespace: str) -> str:
        argv = [require("helm"), "template", "llm-service", str(chart), "--namespace", namespace]
        argv += ["--set", "vllm.model.id=m/x", "--set", "vllm.model.revision=abc", "--set", "vllm.model.gated=false"]
        proc = subprocess.run(argv, capture_output=True, text=True, check=True)
        return str(dashboard([d for d in yaml.safe_load_all(proc.stdout) if d])["uid"])

    a, b = "team-a-" + "x" * 56, "team-a-" + "x" * 55 + "y"  # 63 characters, a common 27-character prefix
    ua, ub = uid(a), uid(b)
    assert UID_RE.match(ua) and UID_RE.match(ub) and ua != ub
    assert uid("llm-dev") == "llm-service-llm-dev"


def test_each_panel_plots_one_unit(helm_template: Template, repo_root: Path) -> None:
    p = panels(dashboard(helm_template(*env_files(repo_root, "prod"), env="prod")))
    err = p["Error ratio (5xx)"]
    assert err["fieldConfig"]["defaults"]["unit"] == "percent"
    assert exprs(err) == ['100 * llm:gateway_errors:ratio_rate5m{namespace="$namespace"}']
    gpu = p["GPU utilisation"]
    assert gpu["fieldConfig"]["defaults"]["unit"] == "percent" and gpu["fieldConfig"]["defaults"]["max"] == 100
    assert exprs(gpu) == ['100 * llm:gpu_utilization:avg{namespace="$namespace"}']
    # What the two panels used to mix in now has a panel (and a unit) of its own.
    assert exprs(p["Request rate"]) == ['llm:gateway_requests:rate5m{namespace="$namespace"}']
    assert p["Request rate"]["fieldConfig"]["defaults"]["unit"] == "reqps"
    assert exprs(p["GPUs"]) == ['llm:gpu_count:sum{namespace="$namespace"}']
    assert p["GPUs"]["fieldConfig"]["defaults"]["unit"] == "none"
    # No panel plots a request rate or a count beside a ratio any more.
    for title, panel in p.items():
        unit = panel["fieldConfig"]["defaults"]["unit"]
        if unit in ("percent", "percentunit"):
            assert not any((":rate5m" in e and "ratio" not in e) or "count" in e for e in exprs(panel)), title


def test_burn_rate_panels_use_the_env_s_slo(helm_template: Template, repo_root: Path, tmp_path: Path) -> None:
    slo = tmp_path / "slo.yaml"
    slo.write_text("monitoring:\n  slo:\n    availability: 0.999\n    fastBurnRate: 10\n    slowBurnRate: 3\n")
    d = dashboard(helm_template(*env_files(repo_root, "prod"), slo, env="prod"))
    consts = {v["name"]: v["query"] for v in d["templating"]["list"] if v["type"] == "constant"}
    assert consts == {"error_budget": "0.001", "fast_burn_rate": "10", "slow_burn_rate": "3"}
    p = panels(d)
    fast = exprs(p["Error budget burn rate, fast windows (per release)"])
    slow = exprs(p["Error budget burn rate, slow windows (per release)"])
    for window, group in (("5m", fast), ("1h", fast), ("30m", slow), ("6h", slow)):
        assert f'llm:gateway_release_errors:ratio_rate{window}{{namespace="$namespace"}} / $error_budget' in group
    assert "vector($fast_burn_rate)" in fast and "vector($slow_burn_rate)" in slow


def test_deploy_and_rollback_annotations(helm_template: Template, repo_root: Path) -> None:
    d = dashboard(helm_template(*env_files(repo_root, "dev"), env="dev"))
    ann = {a["name"]: a for a in d["annotations"]["list"]}
    assert set(ann) == {"Deploys", "Rollbacks"}
    assert "gateway_requests_total" in ann["Deploys"]["expr"] and "{{release}}" in ann["Deploys"]["titleFormat"]
    assert "rollback_controller_last_rollback_timestamp_seconds" in ann["Rollbacks"]["expr"]
