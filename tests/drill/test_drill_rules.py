"""The drill exercises the alert rule render validated: same helm invocation, same rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.artifacts import chart_render
from pipeline.checks import manifests
from pipeline.controller import rollback_drill as drill
from pipeline.core.environments import namespace_for
from pipeline.runtime.tools import REPO_ROOT


def test_drill_renders_through_render_helm_template(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Path, str]] = []
    real = chart_render.helm_template

    def spy(root: Path, env: str, **kw: object) -> str:
        calls.append((root, env))
        return real(root, env)

    monkeypatch.setattr(chart_render, "helm_template", spy)
    drill.chart_alert_rules("staging", drill.DrillConfig())
    assert calls == [(REPO_ROOT, "staging")]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_drill_alert_is_the_rendered_alert_with_drill_windows(env: str) -> None:
    cfg = drill.DrillConfig()
    rules, name, labels = drill.chart_alert_rules(env, cfg)
    # The drill's trigger is the chart's rollback alert: the per-release fast burn rate.
    assert name == drill.ALERT == "LLMErrorBudgetBurnFast"
    rendered = manifests.extract_rules(manifests.load_docs(chart_render.helm_template(REPO_ROOT, env)))
    assert rendered is not None
    alert = next(r for r in manifests.alert_rules(rendered) if r["alert"] == drill.ALERT)
    assert alert["labels"]["rollback"] == "true"
    drilled = next(r for r in rules["groups"][0]["rules"] if r.get("alert") == drill.ALERT)
    assert drilled["labels"] == alert["labels"] and drilled["annotations"] == alert["annotations"]
    assert drilled["for"] == cfg.alert_for
    assert drilled["expr"] == re.sub(r"\[\d+[smhd]\]", f"[{cfg.window}]", alert["expr"])
    # ...with both windows' recording rules (per release, cause="release" only), shortened too.
    records = {r["record"]: r["expr"] for r in rules["groups"][0]["rules"] if "record" in r}
    assert set(records) == {"llm:gateway_release_errors:ratio_rate5m", "llm:gateway_release_errors:ratio_rate1h"}
    assert all(
        f"[{cfg.window}]" in e and 'cause="release"' in e and "(namespace, release)" in e for e in records.values()
    )
    # The request's own labels come from the gateway, never from the scrape target.
    assert not {"cause", "release", "status"} & set(labels)
    # The labels the drill's scrape target gets come from the rendered selectors (release name included).
    assert labels.get("namespace") in (None, namespace_for(env))


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_production_timers_use_the_rendered_rules_unmodified(env: str) -> None:
    from pipeline.controller import drill_timers

    prod = drill_timers.production_rules(env)
    rendered = manifests.extract_rules(manifests.load_docs(chart_render.helm_template(REPO_ROOT, env)))
    assert rendered is not None
    assert prod.rules["groups"] == rendered["groups"]
    # Whatever alert carries rollback="true" is the trigger (wt-cluster's burn-rate alerts included).
    expected = tuple(
        r["alert"] for r in manifests.alert_rules(rendered) if r.get("labels", {}).get("rollback") == "true"
    )
    assert prod.rollback_alerts == expected and expected
    assert prod.scrape_interval == "15s" and prod.eval_interval == drill_timers.DEFAULT_EVAL_INTERVAL
    assert drill_timers.alertmanager_timers()["group_wait"] == "15s"
    # The rollback trigger and the ratios it reads are one group: evaluated in order, no lag between them.
    rollback_group = next(g for g in prod.rules["groups"] if any(r.get("alert") in expected for r in g["rules"]))
    records = [r["record"] for r in rollback_group["rules"] if "record" in r]
    assert {"llm:gateway_release_errors:ratio_rate5m", "llm:gateway_release_errors:ratio_rate1h"} <= set(records)
    assert [r.get("alert") for r in rollback_group["rules"]][-1] in expected  # the alert after its records
