"""The rollback drill end to end: real Prometheus + Alertmanager, gateway, simulator, controller."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.controller.rollback_drill import DrillConfig, run_drill
from pipeline.runtime.tools import find


@pytest.mark.slow
def test_drill_rolls_back_a_bad_release_within_30s(tmp_path: Path) -> None:
    missing = [t for t in ("prometheus", "prometheus-alertmanager", "promtool", "helm") if find(t) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: run `make tools`")
    report = run_drill(tmp_path, DrillConfig(timeout=120))
    assert report.ok, report.problems
    assert report.git["alert"] == "LLMErrorBudgetBurnFast" and report.git["frozen"]
    assert report.git["pinned"] == "0.1.0+drill"
    assert report.timings["breach_to_revert"] <= 30
    assert report.traffic.get("200", 0) > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "at"),
    [
        # prod is pinned; on Jan 2 2027 both the year-end freeze and the weekend window hold it.
        ("prod", dt.datetime(2027, 1, 2, 12, 0, tzinfo=dt.UTC)),
        # dev follows the branch (no windows of its own), judged inside the year-end freeze.
        ("dev", dt.datetime(2026, 12, 30, 12, 0, tzinfo=dt.UTC)),
    ],
)
def test_production_timers_rollback_in_a_freeze_ends_with_a_sync_argo_cd_accepts(
    tmp_path: Path, env: str, at: dt.datetime
) -> None:
    """The chart's rules and timers unmodified; the controller's sync requests go to the Argo CD stand-in
    that answers as argocd-server does (pipeline/gitops/argocd_standin.py) and only its accepted sync
    brings the good release back."""
    missing = [t for t in ("prometheus", "prometheus-alertmanager", "promtool", "helm") if find(t) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: run `make tools`")
    report = run_drill(tmp_path, DrillConfig(env=env, production=True, timeout=600, at=at))
    assert report.ok, report.problems
    assert report.git["pinned"] == "0.1.0+drill" and report.git["frozen"]
    posts = [(r["path"].split("/")[4], r["status"]) for r in report.argocd]
    expected = [("llm-platform-root", 200)] if env == "prod" else []
    assert posts == [*expected, (f"llm-service-{env}", 200)], report.argocd
    assert report.timings["breach_to_revert"] <= 120
    assert report.timings["revert_to_sync_requested"] < 30
