"""scan: planted secrets, ignore-file contract (reason + expiry), gates over Trivy JSON, no-DB skip."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from pipeline.checks import trivy_ignore, trivy_scan
from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.stages import scan

TODAY = dt.date(2026, 11, 27)
# Assembled at run time so this file itself never trips the repository's secret scan.
AWS_KEY = "AKIA" + "IOSFODNN7" + "EXAMPLQ"
PEM = "-----BEGIN " + "RSA PRIVATE KEY-----\n" + "MIIEowIBAAKCAQEA7" * 4 + "\n-----END " + "RSA PRIVATE KEY-----\n"


def git_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app").mkdir(exist_ok=True)
    (root / "app" / "main.py").write_text("print('hello')\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def commit_all(root: Path) -> None:
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "x"], cwd=root, check=True
    )


def test_committed_aws_key_fails_naming_the_file(ctx: RunContext) -> None:
    root = git_repo(ctx.repo_root)
    (root / "app" / "settings.py").write_text(f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\n')
    (root / ".venv").mkdir()
    (root / ".venv" / "leak.txt").write_text(PEM)  # excluded dir: must not be reported
    commit_all(root)
    result = scan.run(scan.ScanOptions(today=TODAY), ctx)
    assert result.status is Status.FAILED
    secrets = next(c for c in result.checks if c.name == "secrets")
    assert secrets.status is Status.FAILED
    assert "app/settings.py" in secrets.detail and "aws-access-key-id" in secrets.detail
    assert ".venv" not in secrets.detail
    # The rest of the stage still ran: SBOM is an artifact, vulnerabilities skipped with a reason.
    assert (ctx.run_dir / "scan" / "sbom.cdx.json").is_file()
    vuln = next(c for c in result.checks if c.name == "vulnerabilities")
    assert vuln.status is Status.SKIPPED and "no Trivy vulnerability DB" in vuln.detail


def test_private_key_fails_and_an_ignore_entry_with_reason_suppresses_it(ctx: RunContext) -> None:
    root = git_repo(ctx.repo_root)
    (root / "app" / "key.pem").write_text(PEM)
    commit_all(root)
    assert scan.run(scan.ScanOptions(today=TODAY), ctx).status is Status.FAILED

    (root / ".trivyignore.yaml").write_text(
        "secrets:\n  - id: private-key\n    paths: ['app/key.pem']\n"
        "    statement: test fixture key, never deployed\n    expired_at: 2027-01-31\n"
    )
    result = scan.run(scan.ScanOptions(today=TODAY), ctx)
    secrets = next(c for c in result.checks if c.name == "secrets")
    assert secrets.status is Status.PASSED and "1 ignored" in secrets.detail
    assert result.status is Status.PASSED  # skipped vuln scan does not fail…
    assert any(c.status is Status.SKIPPED for c in result.checks)  # …but is visible


def test_expired_ignore_entry_fails_the_gate(ctx: RunContext) -> None:
    root = git_repo(ctx.repo_root)
    (root / ".trivyignore.yaml").write_text(
        "vulnerabilities:\n  - id: CVE-2024-0001\n    statement: not reachable\n    expired_at: 2026-01-01\n"
    )
    result = scan.run(scan.ScanOptions(today=TODAY), ctx)
    check = next(c for c in result.checks if c.name == "ignorefile")
    assert result.status is Status.FAILED and check.status is Status.FAILED
    assert "CVE-2024-0001" in check.detail and "expired on 2026-01-01" in check.detail


def test_ignore_entries_need_reason_and_expiry(tmp_path: Path) -> None:
    path = tmp_path / "ignore.yaml"
    path.write_text(
        "vulnerabilities:\n"
        "  - id: CVE-1\n    expired_at: 2027-01-01\n"  # no reason
        "  - id: CVE-2\n    statement: fine\n"  # no expiry
        "  - id: CVE-3\n    statement: fine\n    expired_at: 2027-01-01\n"
        "bogus: []\n"
    )
    ign = trivy_ignore.load(path, TODAY)
    assert [e.id for e in ign.entries] == ["CVE-3"]
    joined = " ".join(ign.problems)
    assert "CVE-1: no statement" in joined and "CVE-2: no valid expired_at" in joined and "bogus" in joined


def vuln_report(*vulns: dict[str, str]) -> dict[str, object]:
    return {"Results": [{"Target": "uv.lock", "Vulnerabilities": list(vulns)}]}


def v(vid: str, sev: str, fixed: str = "") -> dict[str, str]:
    return {"VulnerabilityID": vid, "Severity": sev, "PkgName": "pkg", "InstalledVersion": "1.0", "FixedVersion": fixed}


def test_vulnerability_gate_blocks_fixable_critical_high_only(tmp_path: Path) -> None:
    none = trivy_ignore.IgnoreFile()
    report = vuln_report(v("CVE-A", "CRITICAL", "1.1"), v("CVE-B", "HIGH"), v("CVE-C", "MEDIUM", "2.0"))
    bad, ignored, counts = trivy_scan.gate_vulnerabilities(report, none)
    assert len(bad) == 1 and bad[0].startswith("CVE-A CRITICAL")
    assert counts == {"CRITICAL": 1, "HIGH": 1, "MEDIUM": 1}

    (tmp_path / "i.yaml").write_text("vulnerabilities:\n  - id: CVE-A\n    statement: s\n    expired_at: 2027-01-01\n")
    bad, ignored, _ = trivy_scan.gate_vulnerabilities(report, trivy_ignore.load(tmp_path / "i.yaml", TODAY))
    assert bad == [] and len(ignored) == 1


def test_misconfig_gate_accepts_avd_prefixed_ignore_ids(tmp_path: Path) -> None:
    report = {
        "Results": [
            {
                "Target": "Dockerfile",
                "Misconfigurations": [
                    {
                        "ID": "DS-0002",
                        "AVDID": "AVD-DS-0002",
                        "Severity": "HIGH",
                        "Title": "root user",
                        "Status": "FAIL",
                    },
                    {"ID": "DS-0026", "Severity": "LOW", "Title": "no healthcheck", "Status": "FAIL"},
                ],
            }
        ]
    }
    bad, _, total = trivy_ignore.gate_misconfigs(report, trivy_ignore.IgnoreFile())
    assert total == 2 and len(bad) == 1 and "DS-0002" in bad[0]
    (tmp_path / "i.yaml").write_text(
        "misconfigurations:\n  - id: DS-0002\n    statement: s\n    expired_at: 2027-01-01\n"
    )
    bad, ignored, _ = trivy_ignore.gate_misconfigs(report, trivy_ignore.load(tmp_path / "i.yaml", TODAY))
    assert bad == [] and len(ignored) == 1


def test_dockerfile_running_as_root_fails_config_scan(ctx: RunContext) -> None:
    root = git_repo(ctx.repo_root)
    (root / "app" / "Dockerfile").write_text("FROM python:3.11-slim@sha256:" + "0" * 64 + '\nCMD ["python"]\n')
    result = scan.run(scan.ScanOptions(today=TODAY), ctx)
    config = next(c for c in result.checks if c.name.startswith("config "))
    assert config.status is Status.FAILED and "DS-0002" in config.detail
