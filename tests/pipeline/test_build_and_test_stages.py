"""build (no engine here) and test (on a tiny fixture project, never on this suite itself)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.artifacts.images import IMAGES, Built, ImageSet
from pipeline.artifacts.source import context_digest
from pipeline.core.context import RunContext
from pipeline.core.result import Check, Status
from pipeline.gitops.release import Release, release_of
from pipeline.runtime.engine import Engine, EngineStatus
from pipeline.runtime.registry import Registry
from pipeline.stages import build, test

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_build_without_engine_skips_images_and_pins_content_digests(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "detect_engine", lambda: EngineStatus(None, "no container engine reachable (test)"))
    root = ctx.repo_root
    (root / "app").mkdir(parents=True, exist_ok=True)
    (root / "app" / "Dockerfile").write_text(
        "FROM python:3.11-slim@sha256:" + "0" * 64 + ' AS gateway\nUSER 1000\nCMD ["python"]\nFROM gateway AS vllm\n'
    )
    result = build.run(build.BuildOptions(skip_dist=True), ctx)
    assert result.status is Status.PASSED
    images = [c for c in result.checks if c.name.startswith("image ")]
    # The release images and the pipeline image (rollback controller), all skipped with the reason.
    assert [c.name for c in images] == ["image gateway", "image vllm", "image pipeline"]
    assert [c.status for c in images] == [Status.SKIPPED] * 3
    assert all("test" in c.detail for c in images)
    assert result.evidence["tool_images"] == {}  # never a release pin
    release = release_of(result)
    assert isinstance(release, Release) and release.images_built is False
    assert release.gateway_digest != release.vllm_digest
    assert release.gateway_digest == context_digest(root, "gateway")  # deterministic
    assert (ctx.run_dir / "build" / "release.json").is_file()


def test_hadolint_error_fails_build(ctx: RunContext) -> None:
    (ctx.repo_root / "app").mkdir(parents=True, exist_ok=True)
    (ctx.repo_root / "app" / "Dockerfile").write_text("FROM python:3.11\nRUN cd /tmp && make\nCMD python\n")
    result = build.run(build.BuildOptions(skip_dist=True, hadolint_threshold="warning"), ctx)
    hado = next(c for c in result.checks if c.name.startswith("hadolint"))
    assert result.status is Status.FAILED and hado.status is Status.FAILED
    assert "app/Dockerfile" in hado.detail


def test_given_digests_mean_images_built(ctx: RunContext) -> None:
    (ctx.repo_root / "app").mkdir(parents=True, exist_ok=True)
    gw, vl = "sha256:" + "c" * 64, "sha256:" + "d" * 64
    result = build.run(build.BuildOptions(skip_dist=True, gateway_digest=gw, vllm_digest=vl), ctx)
    release = release_of(result)
    assert release is not None and release.images_built and release.gateway_digest == gw


def fixture_project(root: Path, test_body: str) -> Path:
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.ruff]
            line-length = 100
            [tool.pytest.ini_options]
            markers = ["slow: slow"]
            pythonpath = ["."]
            """
        )
    )
    (root / "calc.py").write_text("def add(a: int, b: int) -> int:\n    return a + b\n")
    (root / "tests" / "test_calc.py").write_text("from calc import add\n\n\n" + test_body)
    return root


def test_test_stage_passes_on_clean_fixture_project(ctx: RunContext) -> None:
    root = fixture_project(ctx.repo_root, "def test_add() -> None:\n    assert add(1, 2) == 3\n")
    result = test.run(test.TestOptions(root=root, skip=["mypy"]), ctx)
    by_name = {c.name: c for c in result.checks}
    assert result.status is Status.PASSED, [c.detail for c in result.failures()]
    assert by_name["pytest"].numbers["tests"] == 1
    assert by_name["mypy"].status is Status.SKIPPED
    assert by_name["rego"].status is Status.SKIPPED and by_name["chart"].status is Status.SKIPPED
    assert (ctx.run_dir / "test" / "pytest-junit.xml").is_file()


def test_unit_tests_run_on_worker_processes_and_slow_selections_stay_serial(ctx: RunContext) -> None:
    # The pytest the stage starts records its PID; each test the PID of the process that ran it.
    body = "import os\n\n\ndef test_add() -> None:\n    assert add(1, 2) == 3\n" + "".join(
        f"\n\ndef test_where_{i}() -> None:\n    open('ran-{i}', 'w').write(str(os.getpid()))\n" for i in range(2)
    )
    root = fixture_project(ctx.repo_root, body)
    (root / "tests" / "conftest.py").write_text(
        "import os\n\n\ndef pytest_configure(config):\n"
        "    if not hasattr(config, 'workerinput'):  # the controlling process, not an xdist worker\n"
        "        open('main-pid', 'w').write(str(os.getpid()))\n"
    )
    skip = ["mypy", "ruff", "format"]

    def ran_in_main() -> set[bool]:
        main = (root / "main-pid").read_text()
        return {(root / f"ran-{i}").read_text() == main for i in range(2)}

    assert test.run(test.TestOptions(root=root, skip=skip), ctx).status is Status.PASSED
    assert ran_in_main() == {False}  # worker processes
    assert test.run(test.TestOptions(root=root, markers="slow or not slow", skip=skip), ctx).status is Status.PASSED
    assert ran_in_main() == {True}  # serial


def test_test_stage_fails_on_a_failing_test_and_lint(ctx: RunContext) -> None:
    body = "def test_add() -> None:\n    assert add(1, 2) == 4\n\n\nimport os\n"  # wrong + unsorted/unused import
    root = fixture_project(ctx.repo_root, body)
    result = test.run(test.TestOptions(root=root, skip=["mypy"]), ctx)
    failed = {c.name for c in result.failures()}
    assert result.status is Status.FAILED
    assert {"pytest", "ruff"} <= failed
    pytest_check = next(c for c in result.checks if c.name == "pytest")
    assert "1 tests, 1 failed" in pytest_check.detail


def test_images_the_registry_refused_are_not_release_pins(ctx: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local image ID is evidence, never a registry digest: images_built stays False without a push."""
    monkeypatch.setattr(build, "detect_engine", lambda: EngineStatus(Engine("podman", "/bin/false"), "test engine"))
    monkeypatch.setattr(build.registries, "ensure", lambda: Registry("127.0.0.1:1", local=True))
    local_id = "sha256:" + "e" * 64

    def fake_build_all(engine: Engine, root: Path, names: tuple[str, ...], *args: object, **kw: object) -> ImageSet:
        built = {n: Built(IMAGES[n], f"localhost/x/{n}:t", image_id=local_id) for n in names}
        refused = [Check(name=f"push {n}", status=Status.FAILED, detail="registry refused") for n in names]
        return ImageSet(checks=refused, built=built)

    monkeypatch.setattr(build.image_artifacts, "build_all", fake_build_all)
    root = ctx.repo_root
    (root / "app").mkdir(parents=True, exist_ok=True)
    (root / "app" / "Dockerfile").write_text("FROM python:3.11-slim@sha256:" + "0" * 64 + " AS gateway\nUSER 1000\n")
    result = build.run(build.BuildOptions(skip_dist=True, images=("gateway", "vllm-cpu")), ctx)
    assert result.status is Status.FAILED  # a refused push fails the stage, naming the image
    assert "push gateway" in result.summary
    release = release_of(result)
    assert release is not None and release.images_built is False
    assert release.gateway_digest == context_digest(root, "gateway") != local_id
    assert result.evidence["local_image_ids"] == {"gateway": local_id, "vllm-cpu": local_id}
    assert result.evidence["tool_images"] == {}


POLICY = 'package main\n\ndeny contains "always" if true\n'


def rego_project(root: Path) -> Path:
    pol = root / "policies"
    pol.mkdir(parents=True)
    (pol / "p.rego").write_text(POLICY)
    (pol / "p_test.rego").write_text(
        "package main\n\ntest_no_denials if count(deny) == 0\n\ntest_one if count(deny) == 1\n"
    )
    return root


NOT_REGO = ["ruff", "format", "mypy", "pytest", "chart"]


def test_failing_rego_test_fails_the_test_stage(ctx: RunContext) -> None:
    root = rego_project(ctx.repo_root)
    result = test.run(test.TestOptions(root=root, skip=NOT_REGO), ctx)
    rego = next(c for c in result.checks if c.name == "rego")
    assert result.status is Status.FAILED and rego.status is Status.FAILED
    assert "p_test.rego:test_no_denials" in rego.detail and "test_one" not in rego.detail
    assert rego.numbers == {"tests": 2, "failed": 1, "untested_policies": 0}


def test_policy_without_tests_fails_the_test_stage(ctx: RunContext) -> None:
    root = rego_project(ctx.repo_root)
    (root / "policies" / "p_test.rego").write_text("package main\n\ntest_one if count(deny) == 1\n")
    (root / "policies" / "lonely.rego").write_text('package main\n\ndeny contains "x" if false\n')
    result = test.run(test.TestOptions(root=root, skip=NOT_REGO), ctx)
    rego = next(c for c in result.checks if c.name == "rego")
    assert rego.status is Status.FAILED
    assert "lonely.rego has no test file lonely_test.rego" in rego.detail
    # ...and once it has a test, the stage passes (every outcome mapped, not the list's truthiness).
    (root / "policies" / "lonely_test.rego").write_text("package main\n\ntest_lonely if count(deny) == 1\n")
    result = test.run(test.TestOptions(root=root, skip=NOT_REGO), ctx)
    assert result.status is Status.PASSED, [c.detail for c in result.failures()]
    assert next(c for c in result.checks if c.name == "rego").numbers["tests"] == 2


def test_rego_verdict_maps_outcomes() -> None:
    from pipeline.checks.policy import TestOutcome

    ok = TestOutcome(Path("a_test.rego"), "test_a", True)
    bad = TestOutcome(Path("a_test.rego"), "test_b", False, "= False")
    assert test.rego_verdict([ok], []).status is Status.PASSED
    assert test.rego_verdict([ok, bad], []).status is Status.FAILED
    assert test.rego_verdict([ok], ["policy x.rego has no test file x_test.rego"]).status is Status.FAILED
    assert test.rego_verdict([], []).status is Status.FAILED  # policies but not one test


@pytest.mark.parametrize("content", ["id: m\nrevision: main\n", "id: m\n", ": not yaml ["])
def test_build_refuses_a_floating_or_missing_model_pin(ctx: RunContext, content: str) -> None:
    (ctx.repo_root / "app" / "model.yaml").write_text(content)
    result = build.run(build.BuildOptions(skip_dist=True), ctx)
    pin = next(c for c in result.checks if c.name == "model pin")
    assert result.status is Status.FAILED and pin.status is Status.FAILED
    assert "app/model.yaml" in pin.detail and release_of(result) is None


def test_build_pins_the_declared_model_revision(ctx: RunContext) -> None:
    result = build.run(build.BuildOptions(skip_dist=True), ctx)
    release = release_of(result)
    assert release is not None and release.model_revision == build.model_revision(REPO_ROOT)


def test_build_registry_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--registry` names another registry; $PIPELINE_REGISTRY is its default; unset = the embedded one."""
    import argparse

    def parsed(*argv: str) -> str | None:
        parser = argparse.ArgumentParser()
        build.add_arguments(parser)
        registry: str | None = parser.parse_args(list(argv)).registry
        return registry

    monkeypatch.delenv(build.REGISTRY_ENV, raising=False)
    assert parsed() is None
    assert parsed("--registry", "registry.example.com/llm") == "registry.example.com/llm"
    monkeypatch.setenv(build.REGISTRY_ENV, "other.example.com:5000/team")
    assert parsed() == "other.example.com:5000/team"
