"""scan reads directories named dev/proc/sys that trivy's walker skips by default
(aquasecurity/trivy#6651): real trivy over planted secrets and misconfigurations."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pipeline.checks import trivy_scan
from pipeline.core.context import RunContext
from pipeline.core.result import Check, Status
from pipeline.stages import scan

TODAY = dt.date(2026, 11, 27)
# Assembled at run time so this file itself never trips the repository's secret scan; the last
# character differs from AWS's documentation example, which trivy allow-lists.
AWS_KEY = "AKIA" + "IOSFODNN7" + "EXAMPLQ"
LEAK = f"aws_access_key_id: {AWS_KEY}\n"
# A HIGH misconfiguration trivy's Kubernetes checks fail (KSV-0017, privileged container).
PRIVILEGED_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
    - name: c
      image: busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000
      securityContext: {privileged: true}
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def secrets_check(ctx: RunContext) -> Check:
    result = scan.run(scan.ScanOptions(today=TODAY), ctx)
    return next(c for c in result.checks if c.name == "secrets")


def test_blind_spots_are_children_named_dev_proc_sys_and_theirs(tmp_path: Path) -> None:
    for d in ("dev/dev", "dev/x/proc", "proc", "environments/dev", "devs"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "sys").symlink_to(tmp_path / "environments")  # trivy does not follow it either
    assert [p.relative_to(tmp_path).as_posix() for p in trivy_scan.blind_spots(tmp_path)] == ["dev", "dev/dev", "proc"]
    assert trivy_scan.blind_spots(tmp_path / "environments" / "missing") == []


def test_secret_in_environments_dev_fails_naming_the_file(ctx: RunContext) -> None:
    root = ctx.repo_root
    write(root / "environments" / "stg" / "values.yaml", "replicas: 1\n")
    write(root / "environments" / "dev" / "values.yaml", "replicas: 1\n")
    assert secrets_check(ctx).status is Status.PASSED

    write(root / "environments" / "dev" / "values.yaml", "replicas: 1\n" + LEAK)
    check = secrets_check(ctx)
    assert check.status is Status.FAILED
    assert "environments/dev/values.yaml:2 aws-access-key-id" in check.detail


def test_secrets_in_top_level_dev_proc_sys_fail_once_each_with_real_paths(ctx: RunContext) -> None:
    root = ctx.repo_root
    for rel in ("dev/values.yaml", "dev/dev/nested.yaml", "proc/p.yaml", "sys/s.yaml"):
        write(root / rel, LEAK)
    write(root / ".venv" / "dev" / "leak.yaml", LEAK)  # an excluded dir stays excluded
    check = secrets_check(ctx)
    assert check.status is Status.FAILED
    for rel in ("dev/values.yaml", "dev/dev/nested.yaml", "proc/p.yaml", "sys/s.yaml"):
        assert f"{rel}:1 aws-access-key-id" in check.detail
    assert ".venv" not in check.detail
    assert check.numbers["violations"] == 4  # no finding reported twice
    # The artifact is the merged report, named from the scanned tree.
    report = json.loads((ctx.run_dir / "scan" / "secrets.json").read_text())
    targets = sorted(r["Target"] for r in report["Results"] if r.get("Secrets"))
    assert targets == ["dev/dev/nested.yaml", "dev/values.yaml", "proc/p.yaml", "sys/s.yaml"]


def test_ignore_entry_matches_the_rerooted_path(ctx: RunContext) -> None:
    root = ctx.repo_root
    write(root / "dev" / "values.yaml", LEAK)
    write(
        root / ".trivyignore.yaml",
        "secrets:\n  - id: aws-access-key-id\n    paths: ['dev/values.yaml']\n"
        "    statement: test fixture, never deployed\n    expired_at: 2027-01-31\n",
    )
    check = secrets_check(ctx)
    assert check.status is Status.PASSED and "1 ignored" in check.detail


def test_config_scan_of_rendered_dir_reads_its_dev_environment(ctx: RunContext, tmp_path: Path) -> None:
    rendered = tmp_path / "rendered"
    write(rendered / "staging" / "pod.yaml", PRIVILEGED_POD.replace("privileged: true", "privileged: false"))
    write(rendered / "dev" / "pod.yaml", PRIVILEGED_POD)
    result = scan.run(scan.ScanOptions(today=TODAY, render_dir=rendered), ctx)
    config = next(c for c in result.checks if c.name == f"config {rendered}")
    assert config.status is Status.FAILED
    # Both pods fail other HIGH checks; only the dev one is privileged, and it is named by its path.
    assert "dev/pod.yaml: KSV-0017 HIGH" in config.detail
    assert "staging/pod.yaml: KSV-0017" not in config.detail and "staging/pod.yaml: KSV-0014" in config.detail


def test_sbom_covers_a_top_level_dev_lockfile(ctx: RunContext) -> None:
    root = ctx.repo_root
    write(root / "dev" / "requirements.txt", "requests==2.31.0\n")
    result = scan.run(scan.ScanOptions(today=TODAY), ctx)
    sbom = next(c for c in result.checks if c.name == "sbom")
    assert sbom.status is Status.PASSED and "sbom.dev.cdx.json" in sbom.detail
    doc = json.loads((ctx.run_dir / "scan" / "sbom.dev.cdx.json").read_text())
    assert any(c.get("name") == "requests" and c.get("version") == "2.31.0" for c in doc.get("components") or [])
