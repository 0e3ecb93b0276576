"""Running Trivy and gating its JSON reports: secrets, vulnerabilities (the misconfiguration gate,
shared with render, is `trivy_ignore.gate_misconfigs`); the vulnerability DB's location.

Every gate returns (violations, ignored) so a stage can say what failed and what the ignore
file let through; `verdict` turns that into one named Check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.checks import trivy_ignore
from pipeline.checks.trivy_ignore import GATE_SEVERITIES
from pipeline.core.cache import EXCLUDED_DIRS
from pipeline.core.result import Check, Status
from pipeline.core.shell import run_command, tail

# The same directories the stage cache never hashes: environments, tool installs, outputs, VCS.
SKIP_DIRS = tuple(sorted(EXCLUDED_DIRS))


def trivy_cache_dir() -> Path:
    return Path(os.environ.get("TRIVY_CACHE_DIR") or Path.home() / ".cache" / "trivy")


def db_present(cache_dir: Path | None = None) -> bool:
    return ((cache_dir or trivy_cache_dir()) / "db" / "trivy.db").is_file()


def skip_args() -> list[str]:
    out: list[str] = []
    for d in SKIP_DIRS:
        out += ["--skip-dirs", d, "--skip-dirs", f"**/{d}"]
    return out


def trivy_json(name: str, argv: list[str], root: Path, out: Path, report: Path) -> tuple[Check | None, dict[str, Any]]:
    """Run a trivy command writing JSON to `report`; return (failure check or None, parsed report)."""
    check, output = run_command(name, [*argv, "--format", "json", "--output", str(report)], cwd=root, log_dir=out)
    if check.status is not Status.PASSED:
        return check, {}
    try:
        return None, json.loads(report.read_text())
    except (OSError, ValueError) as exc:
        return Check(name=name, status=Status.FAILED, detail=f"unreadable trivy report: {exc}; {tail(output)}"), {}


def gate_secrets(report: dict[str, Any], ignores: trivy_ignore.IgnoreFile) -> tuple[list[str], list[str]]:
    """(violations, ignored) — each names the file, line and rule."""
    bad: list[str] = []
    ignored: list[str] = []
    for res in report.get("Results") or []:
        for s in res.get("Secrets") or []:
            what = f"{res.get('Target')}:{s.get('StartLine')} {s.get('RuleID')} ({s.get('Severity')}: {s.get('Title')})"
            (ignored if ignores.match("secrets", str(s.get("RuleID")), str(res.get("Target"))) else bad).append(what)
    return bad, ignored


def gate_vulnerabilities(
    report: dict[str, Any], ignores: trivy_ignore.IgnoreFile
) -> tuple[list[str], list[str], dict[str, float]]:
    """CRITICAL/HIGH with a FixedVersion and no valid ignore entry → violation."""
    bad: list[str] = []
    ignored: list[str] = []
    counts: dict[str, float] = {}
    for res in report.get("Results") or []:
        for v in res.get("Vulnerabilities") or []:
            sev = str(v.get("Severity", "UNKNOWN"))
            counts[sev] = counts.get(sev, 0) + 1
            if sev not in GATE_SEVERITIES or not v.get("FixedVersion"):
                continue
            vid = str(v.get("VulnerabilityID"))
            what = f"{vid} {sev} {v.get('PkgName')} {v.get('InstalledVersion')} → {v.get('FixedVersion')} ({res.get('Target')})"
            pkg_path = str(v.get("PkgPath") or res.get("Target") or "")
            (ignored if ignores.match("vulnerabilities", vid, pkg_path) else bad).append(what)
    return bad, ignored, counts


def verdict(name: str, bad: list[str], ignored: list[str], ok_detail: str, seconds: float) -> Check:
    if bad:
        more = f" (+{len(bad) - 10} more)" if len(bad) > 10 else ""
        return Check(
            name=name, status=Status.FAILED, detail="; ".join(bad[:10]) + more, seconds=seconds,
            numbers={"violations": len(bad), "ignored": len(ignored)},
        )  # fmt: skip
    note = f"; {len(ignored)} ignored by the ignore file" if ignored else ""
    return Check(
        name=name, status=Status.PASSED, detail=ok_detail + note, seconds=seconds, numbers={"ignored": len(ignored)}
    )
