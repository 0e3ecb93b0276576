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


# Trivy's walker skips the relative paths `dev`, `proc` and `sys` of every filesystem target by
# default, so a project directory of that name directly under the target (a rendered `dev`
# environment, say) is silently never read — aquasecurity/trivy#6651 (fix PR #10975, both open).
# Measured with trivy 0.76: only direct children of the target; deeper ones (environments/dev from
# the repository root) are read. `--skip-dirs` adds to these defaults and cannot lift them.
TRIVY_DEFAULT_SKIPPED = ("dev", "proc", "sys")


def blind_spots(target: Path) -> list[Path]:
    """Directories under `target` a trivy walk of it never enters, outermost first: its children
    named dev/proc/sys and, as each is then scanned as a target of its own, theirs."""
    if not target.is_dir() or target.is_symlink():
        return []
    found: list[Path] = []
    for name in TRIVY_DEFAULT_SKIPPED:
        child = target / name
        if child.is_dir() and not child.is_symlink():  # trivy's walk does not follow links either
            found += [child, *blind_spots(child)]
    return found


def _reroot(report: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """The report's Results with Target (and package paths) relative to the outer target again."""
    results: list[dict[str, Any]] = []
    for res in report.get("Results") or []:
        res = dict(res, Target=f"{prefix}/{res.get('Target')}")
        for key in ("Vulnerabilities", "Packages"):
            if res.get(key):
                res[key] = [dict(x, PkgPath=f"{prefix}/{x['PkgPath']}") if x.get("PkgPath") else x for x in res[key]]
        results.append(res)
    return results


def trivy_json_tree(
    name: str, argv: list[str], target: Path, root: Path, out: Path, report: Path
) -> tuple[Check | None, dict[str, Any]]:
    """`trivy_json` of `argv + [target]` that also reads its blind spots (see TRIVY_DEFAULT_SKIPPED):
    each is scanned with the same argv, and its Results join the report with Targets named from
    `target` as before (`dev/values.yaml`). `report` holds the merged JSON; any failing scan fails."""
    failed, merged = trivy_json(name, [*argv, str(target)], root, out, report)
    if failed:
        return failed, {}
    where = target if target.is_absolute() else root / target
    extra: list[dict[str, Any]] = []
    for spot in blind_spots(where):
        rel = spot.relative_to(where).as_posix()
        part = report.with_name(f"{report.stem}.{rel.replace('/', '.')}{report.suffix}")
        failed, sub = trivy_json(f"{name} ({rel})", [*argv, str(spot)], root, out, part)
        if failed:
            return failed, {}
        extra += _reroot(sub, rel)
    # Once trivy reads these directories itself (#10975), their Targets are already in the report.
    seen = {str(r.get("Target")) for r in merged.get("Results") or []}
    extra = [r for r in extra if r["Target"] not in seen]
    if extra:
        merged = dict(merged, Results=[*(merged.get("Results") or []), *extra])
        report.write_text(json.dumps(merged, indent=2))
    return None, merged


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
