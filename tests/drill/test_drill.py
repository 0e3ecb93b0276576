"""The rollback drill end to end: real Prometheus + Alertmanager, gateway, simulator, controller."""

from __future__ import annotations

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
