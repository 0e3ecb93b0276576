"""summary.md links each stage's own report and shows its plots, relative to the run dir."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.report import write_all
from pipeline.core.result import Check, StageResult, Status


def test_summary_links_stage_reports_and_embeds_plots(tmp_path: Path) -> None:
    run = tmp_path / "run"
    results = [
        StageResult(
            stage="loadtest",
            status=Status.PASSED,
            checks=[Check(name="slo", status=Status.PASSED)],
            artifacts=["loadtest.md", "loadtest/ttft_distribution.png", "loadtest/slo.json"],
        ),
        StageResult(
            stage="render",
            status=Status.PASSED,
            artifacts=[str(run / "render" / "report.html"), "/elsewhere/outside.png"],
        ),
    ]
    summary = write_all(run, results)["summary"].read_text()
    assert "- loadtest: [loadtest.md](loadtest.md)" in summary
    assert "![loadtest: ttft_distribution](loadtest/ttft_distribution.png)" in summary
    assert "- render: [report.html](render/report.html)" in summary  # absolute inside the run: relative link
    assert "outside.png" not in summary and "slo.json" not in summary
