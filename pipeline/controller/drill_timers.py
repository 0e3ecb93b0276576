"""Production timers for the rollback drill: the chart's rendered rules as they are, the chart's
scrape interval, Prometheus' evaluation interval and the controller chart's Alertmanager timers; the
controller's sync request to Argo CD's stand-in (pipeline/gitops/argocd_standin.py) brings the old release back.

`python -m pipeline drill --production-timers` measures breach → firing → webhook → revert → sync
requested with exactly these settings; the fast drill shortens windows to seconds instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML

from pipeline.artifacts import chart_render
from pipeline.runtime.tools import REPO_ROOT

# kube-prometheus-stack's default `evaluationInterval` (rule groups without their own interval).
DEFAULT_EVAL_INTERVAL = "30s"
# Labels of the scraped series that come from the request, never from the scrape target.
REQUEST_LABELS = {"__name__", "status", "code", "le", "cause", "release", "model", "route", "method"}


@dataclass(frozen=True)
class ProductionRules:
    rules: dict[str, Any]  # a Prometheus rule file: every group of the rendered PrometheusRule, unmodified
    rollback_alerts: tuple[str, ...]  # alerts labelled rollback="true" (whatever the chart names them)
    target_labels: dict[str, str]  # what the scrape target must carry to match the rules' selectors
    scrape_interval: str
    eval_interval: str


def _docs(text: str) -> list[Any]:
    return [d for d in YAML(typ="safe").load_all(text) if d]


def production_rules(env: str, rollback_label: str = "rollback") -> ProductionRules:
    """The env's rendered PrometheusRule and ServiceMonitor (`helm template`, as `render` validates them)."""
    docs = _docs(chart_render.helm_template(REPO_ROOT, env))
    rule_doc = next(d for d in docs if d.get("kind") == "PrometheusRule")
    groups = rule_doc["spec"]["groups"]
    alerts = tuple(
        r["alert"]
        for g in groups
        for r in g["rules"]
        if r.get("alert") and str((r.get("labels") or {}).get(rollback_label)) == "true"
    )
    if not alerts:
        raise RuntimeError(f'the chart renders no alert labelled {rollback_label}="true" for {env}')
    labels: dict[str, str] = {}
    for g in groups:
        for r in g["rules"]:
            for name, op, value in re.findall(r'(\w+)\s*(=~|=)\s*"([^"]*)"', str(r.get("expr", ""))):
                if name in REQUEST_LABELS or name.startswith("__") or (op == "=~" and name != "pod"):
                    continue
                labels.setdefault(name, value.replace(".*", "drill-0") if op == "=~" else value)
    monitors = [d for d in docs if d.get("kind") == "ServiceMonitor"]
    scrape = "30s"
    for m in monitors:
        if "gateway" in str(m["metadata"]["name"]):
            scrape = str((m["spec"]["endpoints"] or [{}])[0].get("interval") or scrape)
    eval_interval = next((str(g["interval"]) for g in groups if g.get("interval")), DEFAULT_EVAL_INTERVAL)
    return ProductionRules({"groups": groups}, alerts, labels, scrape, eval_interval)


def alertmanager_timers() -> dict[str, str]:
    """groupWait / groupInterval / repeatInterval of the controller chart's AlertmanagerConfig route."""
    values = YAML(typ="safe").load((REPO_ROOT / "charts" / "rollback-controller" / "values.yaml").read_text())
    am = values["alertmanagerConfig"]
    return {
        "group_wait": str(am["groupWait"]),
        "group_interval": str(am["groupInterval"]),
        "repeat_interval": str(am["repeatInterval"]),
    }
