"""The scan ignore file (`.trivyignore.yaml`, Trivy's YAML ignore format) with a stricter contract.

Trivy accepts entries without a reason or expiry; this gate does not: every entry must
carry `statement` (why it is acceptable) and `expired_at` (a date). An expired entry
fails the gate instead of silently ceasing to suppress, so someone has to re-decide.

    vulnerabilities:
      - id: CVE-2024-0000
        paths: ["usr/lib/python3/dist-packages/foo"]   # optional: limit to these targets
        statement: not reachable: we never call foo.bar()
        expired_at: 2027-01-31
    misconfigurations: [...]
    secrets: [...]

One file (`.trivyignore.yaml` at the repository root) and one misconfiguration gate
(`gate_misconfigs`) serve both Trivy config scans: `scan` (Dockerfiles) and `render` (the
rendered chart). Trivy itself is never given the file: findings are filtered here, so an
expired or reasonless entry cannot suppress anything.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

SECTIONS = ("vulnerabilities", "misconfigurations", "secrets", "licenses")
# The ignore file, relative to the repository root.
DEFAULT_PATH = Path(".trivyignore.yaml")
# Findings at these severities fail a gate unless a valid entry accepts them.
GATE_SEVERITIES = ("CRITICAL", "HIGH")


@dataclass(frozen=True)
class IgnoreEntry:
    section: str
    id: str
    statement: str
    expired_at: dt.date
    paths: tuple[str, ...] = ()

    def matches(self, section: str, finding_id: str, target: str = "") -> bool:
        if section != self.section:
            return False
        # Trivy writes misconfig IDs both as DS-0002 and AVD-DS-0002.
        ids = {finding_id, finding_id.removeprefix("AVD-"), f"AVD-{finding_id}"}
        if self.id not in ids:
            return False
        return not self.paths or any(fnmatch.fnmatch(target, p) or target == p for p in self.paths)


@dataclass
class IgnoreFile:
    entries: list[IgnoreEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # malformed / expired entries: each fails the gate

    def match(self, section: str, finding_id: str, target: str = "") -> IgnoreEntry | None:
        return next((e for e in self.entries if e.matches(section, finding_id, target)), None)


def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def load(path: Path, today: dt.date | None = None) -> IgnoreFile:
    """Parse and validate; an absent file is an empty (valid) ignore list."""
    today = today or dt.datetime.now(dt.UTC).date()
    result = IgnoreFile()
    if not path.is_file():
        return result
    try:
        data = YAML(typ="safe").load(path.read_text()) or {}
    except Exception as exc:  # any YAML error is a gate failure with the parser's message
        result.problems.append(f"{path.name}: not valid YAML: {exc}")
        return result
    if not isinstance(data, dict):
        result.problems.append(f"{path.name}: top level must be a mapping of {', '.join(SECTIONS)}")
        return result
    for section, items in data.items():
        if section not in SECTIONS:
            result.problems.append(f"{path.name}: unknown section {section!r}")
            continue
        for i, item in enumerate(items or []):
            where = f"{path.name}: {section}[{i}]"
            if not isinstance(item, dict) or not item.get("id"):
                result.problems.append(f"{where}: entry has no id")
                continue
            where = f"{where} {item['id']}"
            statement = str(item.get("statement") or "").strip()
            expiry = _as_date(item.get("expired_at"))
            if not statement:
                result.problems.append(f"{where}: no statement (the reason it is acceptable)")
            if expiry is None:
                result.problems.append(f"{where}: no valid expired_at date (YYYY-MM-DD)")
            elif expiry < today:
                result.problems.append(f"{where}: expired on {expiry.isoformat()} — re-assess and renew or fix")
            if statement and expiry is not None and expiry >= today:
                paths = tuple(str(p) for p in (item.get("paths") or []))
                result.entries.append(IgnoreEntry(section, str(item["id"]), statement, expiry, paths))
    return result


def gate_misconfigs(
    report: dict[str, Any], ignores: IgnoreFile, severities: tuple[str, ...] = GATE_SEVERITIES
) -> tuple[list[str], list[str], int]:
    """(violations, ignored, failed findings of any severity) of a `trivy config --format json` report.

    A violation is a FAIL at one of `severities` that no valid entry accepts; each names the
    target (file, relative to what was scanned), the check id, severity, title and message.
    """
    bad: list[str] = []
    ignored: list[str] = []
    total = 0
    for res in report.get("Results") or []:
        target = str(res.get("Target"))
        for m in res.get("Misconfigurations") or []:
            if m.get("Status", "FAIL") != "FAIL":
                continue
            total += 1
            if m.get("Severity") not in severities:
                continue
            what = f"{target}: {m.get('ID')} {m.get('Severity')} {m.get('Title')}"
            if m.get("Message"):
                what += f": {m.get('Message')}"
            mid = str(m.get("AVDID") or m.get("ID"))
            matched = ignores.match("misconfigurations", mid, target) or ignores.match(
                "misconfigurations", str(m.get("ID")), target
            )
            (ignored if matched else bad).append(what)
    return bad, ignored, total
