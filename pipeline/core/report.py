"""Writers for a run's evidence: report.json (machines), summary.md (humans, CI step
summaries) and junit.xml (CI test-report widgets). All three are built from the same
list of StageResults, so they can never disagree.
"""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.result import StageResult, Status

REPORT_SCHEMA = "llm-delivery/pipeline-report/v1"


def overall_status(results: Sequence[StageResult]) -> Status:
    """FAILED if anything failed; PASSED only if something passed; SKIPPED is never a pass."""
    if any(r.status is Status.FAILED for r in results):
        return Status.FAILED
    if results and all(r.status is Status.SKIPPED for r in results):
        return Status.SKIPPED
    return Status.PASSED if results else Status.SKIPPED


def unproven(results: Sequence[StageResult]) -> list[str]:
    """Production checks that did not run: skipped stages and skipped checks, with reasons."""
    out: list[str] = []
    for r in results:
        if r.status is Status.SKIPPED:
            out.append(f"{r.stage}: {r.summary or 'skipped'}")
            continue
        out.extend(f"{r.stage}/{c.name}: {c.detail or 'skipped'}" for c in r.skipped())
    return out


def build_report(
    results: Sequence[StageResult],
    *,
    run_id: str,
    meta: dict[str, Any] | None = None,
    not_run: Sequence[str] = (),
) -> dict[str, Any]:
    status = overall_status(results)
    return {
        "schema": REPORT_SCHEMA,
        "run_id": run_id,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "status": status.value,
        "seconds": round(sum(r.seconds for r in results if not r.cached), 3),
        "stages": [r.model_dump(mode="json") for r in results],
        "not_run": list(not_run),
        "unproven": unproven(results),
        **(meta or {}),
    }


def write_json(path: Path, report: dict[str, Any]) -> Path:
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return path


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _report_links(report: dict[str, Any], run_dir: Path | None) -> list[str]:
    """Stage reports (.md/.html) as links and plots (.png) as images, relative to the summary."""
    lines: list[str] = []
    for st in report["stages"]:
        for art in st.get("artifacts", []):
            path = Path(art)
            if path.is_absolute():
                if run_dir is None or not path.is_relative_to(run_dir):
                    continue
                path = path.relative_to(run_dir)
            if path.suffix == ".png":
                lines.append(f"![{st['stage']}: {path.stem}]({path.as_posix()})")
            elif path.suffix in (".md", ".html"):
                lines.append(f"- {st['stage']}: [{path.name}]({path.as_posix()})")
    return lines


def render_markdown(report: dict[str, Any], run_dir: Path | None = None) -> str:
    icon = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}
    lines = [
        f"# Pipeline run `{report['run_id']}`: {icon.get(report['status'], '')} {report['status'].upper()}",
        "",
        "| stage | status | time | cached | summary |",
        "|---|---|---:|:---:|---|",
    ]
    for st in report["stages"]:
        lines.append(
            f"| {st['stage']} | {icon.get(st['status'], '')} {st['status']} | {st['seconds']:.1f}s | "
            f"{'yes' if st.get('cached') else ''} | {_md_escape(st.get('summary', ''))} |"
        )
    for name in report.get("not_run", []):
        lines.append(f"| {name} | not run | | | stopped before this stage |")
    failures = [(st["stage"], c) for st in report["stages"] for c in st["checks"] if c["status"] == "failed"]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- **{s}/{c['name']}**: {_md_escape(c['detail'])}" for s, c in failures]
    if report.get("unproven"):
        lines += ["", "## Unproven production checks (skipped here, never counted as passed)", ""]
        lines += [f"- {_md_escape(u)}" for u in report["unproven"]]
    promotion = report.get("promotion")
    if promotion:
        lines += ["", "## Promotion", "", f"- {_md_escape(str(promotion))}"]
    links = _report_links(report, run_dir)
    if links:
        lines += ["", "## Stage reports and plots", "", *links]
    return "\n".join(lines) + "\n"


def render_junit(results: Sequence[StageResult], run_id: str) -> str:
    """One <testsuite> per stage, one <testcase> per check (a stage without checks is one case)."""
    suites = ET.Element("testsuites", name=f"pipeline {run_id}")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for r in results:
        checks = r.checks or []
        suite = ET.SubElement(suites, "testsuite", name=r.stage, time=f"{r.seconds:.3f}")
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        cases: list[tuple[str, Status, str, float]] = [(c.name, c.status, c.detail, c.seconds) for c in checks] or [
            (r.stage, r.status, r.summary, r.seconds)
        ]
        for name, status, detail, seconds in cases:
            case = ET.SubElement(suite, "testcase", classname=f"pipeline.{r.stage}", name=name, time=f"{seconds:.3f}")
            counts["tests"] += 1
            if status is Status.FAILED:
                counts["failures"] += 1
                ET.SubElement(case, "failure", message=detail[:500] or "failed").text = detail
            elif status is Status.SKIPPED:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=detail[:500] or "skipped")
        if r.cached:
            props = ET.SubElement(suite, "properties")
            ET.SubElement(props, "property", name="cached", value="true")
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("errors", "0")
    for k, v in totals.items():
        suites.set(k, str(v))
    suites.set("errors", "0")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_all(
    run_dir: Path,
    results: Sequence[StageResult],
    *,
    meta: dict[str, Any] | None = None,
    not_run: Sequence[str] = (),
) -> dict[str, Path]:
    """Write report.json, summary.md and junit.xml into run_dir; return their paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(results, run_id=run_dir.name, meta=meta, not_run=not_run)
    paths = {
        "report": write_json(run_dir / "report.json", report),
        "summary": run_dir / "summary.md",
        "junit": run_dir / "junit.xml",
    }
    paths["summary"].write_text(render_markdown(report, run_dir))
    paths["junit"].write_text(render_junit(results, run_dir.name))
    return paths
