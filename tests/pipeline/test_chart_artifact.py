"""The chart as a versioned artifact: versions per build, the package and its digest, the push gate."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.artifacts import chart
from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.gitops.release import Release, release_of
from pipeline.runtime.engine import EngineStatus
from pipeline.runtime.tools import find
from pipeline.stages import build

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "c" * 64


def _release(**kw: object) -> Release:
    base: dict[str, object] = {
        "id": "0.1.0+g1a2b3c4",
        "commit": "1a2b3c4" + "0" * 33,
        "chart_version": "0.1.0-g1a2b3c4",
        "gateway_digest": "sha256:" + "a" * 64,
        "vllm_digest": "sha256:" + "b" * 64,
        "model_revision": "rev",
    }
    return Release.model_validate(base | kw)


@pytest.mark.parametrize(
    ("commit", "dirty", "release", "expected"),
    [
        ("1a2b3c4d" + "0" * 32, False, True, "0.1.0"),
        ("1a2b3c4d" + "0" * 32, False, False, "0.1.0-g1a2b3c4"),
        ("1a2b3c4d" + "0" * 32, True, True, "0.1.0-g1a2b3c4.dirty-deadbeef"),  # a dirty tree is never the release
        ("unknown", True, False, "0.1.0-gunknown.dirty-deadbeef"),
    ],
)
def test_every_build_gets_an_addressable_semver(commit: str, dirty: bool, release: bool, expected: str) -> None:
    version = chart.build_version("0.1.0", commit, dirty, release=release, content="deadbeef" + "0" * 56)
    assert version == expected
    assert chart.SEMVER_RE.match(version), version


@pytest.mark.parametrize("bad", ["0.1.0+g1a2b3c4", "~0.1.0", "0.1", "*", "0.1.x", "01.2.3", "0.1.0-01", ""])
def test_oci_addressable_versions_only(bad: str) -> None:
    # `+` (SemVer build metadata) cannot be an OCI tag; ranges are not a pin.
    assert not chart.SEMVER_RE.match(bad)


def test_release_chart_digest_round_trips_and_stays_optional() -> None:
    old = _release()
    assert "chartDigest" not in old.to_values()["release"]  # release.yaml files written before stay unchanged
    assert Release.from_values(old.to_values()) == old
    new = _release(chart_digest=DIGEST)
    assert new.to_values()["release"]["chartDigest"] == DIGEST
    assert Release.from_values(new.to_values()) == new
    with pytest.raises(ValidationError, match="chart digest"):
        _release(chart_digest="sha256:nope")


def test_push_without_registry_is_skipped_never_passed(tmp_path: Path) -> None:
    check, digest = chart.push("helm", tmp_path / "x.tgz", None, tmp_path)
    assert check.status is Status.SKIPPED and digest is None
    assert chart.REGISTRY_ENV in check.detail


@pytest.fixture
def helm() -> str:
    path = find("helm")
    if path is None:
        pytest.fail("helm not installed (`make tools`)")
    return path


def test_package_pins_the_version_and_the_archive_digest(helm: str, tmp_path: Path) -> None:
    check, packaged = chart.package(
        helm, REPO / chart.CHART_DIR, "0.1.0-g1a2b3c4", "0.1.0+g1a2b3c4", tmp_path, tmp_path
    )
    assert check.status is Status.PASSED and packaged is not None, check.detail
    assert packaged.path.name == "llm-service-0.1.0-g1a2b3c4.tgz"
    assert chart.packaged_version(packaged.path) == "0.1.0-g1a2b3c4"
    assert packaged.digest == chart.sha256_file(packaged.path) and packaged.digest in check.detail
    assert chart.find_packaged([tmp_path / "nope", tmp_path], "0.1.0-g1a2b3c4") == packaged.path
    assert chart.find_packaged([tmp_path], "0.2.0") is None
    # A file named like another version is not that version.
    shutil.copy(packaged.path, tmp_path / "llm-service-0.3.0.tgz")
    assert chart.find_packaged([tmp_path], "0.3.0") is None


def test_push_to_an_unreachable_registry_fails_without_leaking_the_password(
    helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, packaged = chart.package(helm, REPO / chart.CHART_DIR, "0.1.0", "0.1.0", tmp_path, tmp_path)
    assert packaged is not None
    monkeypatch.setenv(chart.USERNAME_ENV, "ci")
    monkeypatch.setenv(chart.PASSWORD_ENV, "s3cret-value")
    check, digest = chart.push(helm, packaged.path, "127.0.0.1:1/llm/charts", tmp_path)
    assert check.status is Status.FAILED and digest is None
    assert "s3cret-value" not in check.detail
    assert all("s3cret-value" not in f.read_text() for f in tmp_path.glob("*.log"))


def test_build_packages_the_chart_and_pins_its_digest(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch, helm: str
) -> None:
    monkeypatch.setattr(build, "detect_engine", lambda: EngineStatus(None, "no container engine reachable (test)"))
    monkeypatch.delenv(chart.REGISTRY_ENV, raising=False)
    shutil.copytree(REPO / chart.CHART_DIR, ctx.repo_root / chart.CHART_DIR)
    result = build.run(build.BuildOptions(skip_dist=True), ctx)
    by_name = {c.name: c for c in result.checks}
    assert by_name["chart package"].status is Status.PASSED, by_name["chart package"].detail
    assert by_name["chart push"].status is Status.SKIPPED  # local executor: no registry, never passed
    release = release_of(result)
    assert release is not None
    # Not a git checkout: a dirty per-commit pre-release of Chart.yaml's version, still exact SemVer.
    assert release.chart_version.startswith("0.1.0-gunknown.dirty-")
    tgz = ctx.run_dir / chart.BUILD_SUBDIR / f"llm-service-{release.chart_version}.tgz"
    assert release.chart_digest == chart.sha256_file(tgz)
    assert result.evidence["chart"]["digest"] == release.chart_digest
    assert result.evidence["chart"]["pushed"] is False


def test_build_honours_an_explicit_chart_version_and_rejects_build_metadata(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch, helm: str
) -> None:
    monkeypatch.setattr(build, "detect_engine", lambda: EngineStatus(None, "no engine (test)"))
    shutil.copytree(REPO / chart.CHART_DIR, ctx.repo_root / chart.CHART_DIR)
    ok = build.run(build.BuildOptions(skip_dist=True, chart_version="0.1.0"), ctx)
    rel = release_of(ok)
    assert rel is not None and rel.chart_version == "0.1.0" and rel.chart_digest
    bad = build.run(build.BuildOptions(skip_dist=True, chart_version="0.1.0+meta"), ctx)
    pkg = next(c for c in bad.checks if c.name == "chart package")
    assert bad.status is Status.FAILED and "'+'" in pkg.detail


def test_dagger_module_uses_the_same_chart_registry_variables() -> None:
    sys.path.insert(0, str(REPO / "pipeline" / "dagger" / "src"))
    try:
        plan = importlib.import_module("pipeline_dagger.plan")
    finally:
        sys.path.pop(0)
    assert (plan.CHART_REGISTRY_ENV, plan.CHART_USERNAME_ENV, plan.CHART_PASSWORD_ENV) == (
        chart.REGISTRY_ENV,
        chart.USERNAME_ENV,
        chart.PASSWORD_ENV,
    )
    assert "helm" in plan.TOOLS["build"]


def test_packaging_is_reproducible_across_checkouts(helm: str, tmp_path: Path) -> None:
    """Same chart content → same bytes, whatever the files' mtimes (a fresh clone, a CI re-run)."""
    _, first = chart.package(helm, REPO / chart.CHART_DIR, "0.1.0-g1a2b3c4", "0.1.0", tmp_path / "a", tmp_path)
    copy = tmp_path / "checkout" / chart.CHART_NAME
    shutil.copytree(REPO / chart.CHART_DIR, copy)
    os.utime(copy / "values.yaml", (1_800_000_000, 1_800_000_000))
    _, second = chart.package(helm, copy, "0.1.0-g1a2b3c4", "0.1.0", tmp_path / "b", tmp_path)
    assert first is not None and second is not None
    assert first.digest == second.digest
