"""scan of built images with real Trivy, podman and the embedded registry.

A pushed image is read from its registry by digest (nothing exported to disk); one that was not
pushed, or whose registry cannot be read, from an archive the engine exports, removed afterwards;
an export that would not fit on disk is refused up front with the numbers. Slow: builds tiny
images FROM the cached local Debian base.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from pipeline.artifacts import images
from pipeline.checks import image_source
from pipeline.core.context import RunContext
from pipeline.core.result import Check, Status
from pipeline.runtime import engine, registry
from pipeline.runtime.procs import free_port
from pipeline.stages import scan

pytestmark = pytest.mark.slow

# Assembled at run time so this file itself never trips the repository's secret scan.
AWS_KEY = "AKIA" + "IOSFODNN7" + "EXAMPLQ"


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunContext:
    monkeypatch.setenv("TRIVY_CACHE_DIR", str(tmp_path / "trivy-cache"))  # never the user's analysis cache
    (tmp_path / "run").mkdir()
    (tmp_path / "repo").mkdir()  # an empty tree: only the image checks have anything to find
    return RunContext(
        run_dir=tmp_path / "run",
        repo_root=tmp_path / "repo",
        console=Console(stderr=True, force_terminal=False),
        executor="local",
    )


def build(podman: engine.Engine, base: str, tmp_path: Path, tag: str, leak: bool) -> str:
    ctx = tmp_path / f"ctx-{tag}"
    ctx.mkdir()
    (ctx / "settings.py").write_text(f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\n' if leak else "DEBUG = False\n")
    (ctx / "Dockerfile").write_text(
        f'FROM {base}\nCOPY settings.py /srv/app/settings.py\nUSER 10001:10001\nHEALTHCHECK CMD ["true"]\n'
    )
    ref = f"localhost/llm-test/scanned:{tag}"
    proc = podman.run(["build", "-q", "-t", ref, str(ctx)], timeout=600)
    assert proc.returncode == 0, proc.stderr
    return ref


def pushed(podman: engine.Engine, local: str, reg: registry.Registry, tmp_path: Path) -> dict[str, str]:
    built = images.Built(images.ImageSpec("scanned", "x", "llm-test/scanned"), local)
    check = images.push(podman, built, reg, local.rsplit(":", 1)[1], tmp_path)
    assert check.status is Status.PASSED, check.detail
    assert built.ref and built.digest
    return {"local": local, "ref": built.ref, "digest": built.digest}


def image_check(ctx: RunContext, built: dict[str, str]) -> Check:
    result = scan.run(scan.ScanOptions(built={"scanned": built}), ctx)
    return next(c for c in result.checks if c.name == "image scanned")


def test_a_pushed_image_is_read_from_the_registry_by_digest(
    podman: engine.Engine, base: str, reg: registry.Registry, ctx: RunContext, tmp_path: Path
) -> None:
    leaky = pushed(podman, build(podman, base, tmp_path, "leak", leak=True), reg, tmp_path)
    check = image_check(ctx, leaky)
    assert check.status is Status.FAILED
    assert "/srv/app/settings.py" in check.detail and "aws-access-key-id" in check.detail
    assert not (ctx.run_dir / "scan" / "images").exists()  # nothing exported

    clean = pushed(podman, build(podman, base, tmp_path, "clean", leak=False), reg, tmp_path)
    check = image_check(ctx, clean)
    assert check.status is Status.PASSED, check.detail
    assert f"read from registry {reg.host}" in check.detail
    assert check.numbers["components"] > 0  # the SBOM lists the base's Debian packages
    report = (ctx.run_dir / "scan" / "image-scanned.json").read_text()
    assert clean["digest"] in report  # the scan names exactly the pushed manifest


def test_an_image_not_pushed_is_exported_and_the_archive_removed(
    podman: engine.Engine, base: str, ctx: RunContext, tmp_path: Path
) -> None:
    local = build(podman, base, tmp_path, "local-leak", leak=True)
    check = image_check(ctx, {"local": local, "ref": "", "digest": ""})
    assert check.status is Status.FAILED and "/srv/app/settings.py" in check.detail
    assert list((ctx.run_dir / "scan" / "images").iterdir()) == []


def test_an_unreadable_registry_falls_back_to_the_export_and_says_so(
    podman: engine.Engine, base: str, ctx: RunContext, tmp_path: Path
) -> None:
    local = build(podman, base, tmp_path, "gone", leak=False)
    nobody = f"127.0.0.1:{free_port()}/llm-test/scanned@sha256:{'0' * 64}"  # nothing listens there
    check = image_check(ctx, {"local": local, "ref": nobody, "digest": "sha256:" + "0" * 64})
    assert check.status is Status.PASSED, check.detail
    assert "not readable from its registry" in check.detail and "exported" in check.detail


def test_an_export_that_would_not_fit_is_refused_naming_the_space(
    podman: engine.Engine, base: str, ctx: RunContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = build(podman, base, tmp_path, "nospace", leak=False)
    monkeypatch.setattr(image_source, "free_bytes", lambda path: 300 * 1024 * 1024)
    check = image_check(ctx, {"local": local, "ref": "", "digest": ""})
    assert check.status is Status.FAILED
    assert f"exporting {local} for the scan needs" in check.detail and "0.3 GiB free" in check.detail
    assert not (ctx.run_dir / "scan" / "images" / "scanned.tar").exists()
