"""Stage cache keys cover what each stage reads: a changed input always misses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.core.cache import TRACKED, InputHasher, tracked_files
from pipeline.core.context import RunContext
from pipeline.runtime.engine import Engine, EngineStatus
from pipeline.stages import build, ci, loadtest, render, scan, smoke, test

REPO = Path(__file__).resolve().parents[2]


def key(name: str, ctx: RunContext, opts: object | None = None) -> str:
    mod = ci.load_stage_module(name)
    assert mod is not None
    raw = opts if opts is not None else ci._parse_defaults(mod, name, [])
    return ci.stage_cache_key(name, mod, raw, ci._jsonable(raw), ctx, InputHasher(ctx.run_dir / "idx"), "head")


@pytest.fixture
def render_repo(ctx: RunContext, crd_schemas: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIPELINE_CRD_SCHEMAS", str(crd_schemas))
    root = ctx.repo_root
    for rel in ("charts", "environments", "policies", "docs/runbooks"):
        shutil.copytree(REPO / rel, root / rel)
    shutil.copy2(REPO / ".trivyignore.yaml", root / ".trivyignore.yaml")
    return root


def test_render_declares_its_inputs_and_tools() -> None:
    for rel in ("charts", "environments", "policies", "docs/runbooks", ".trivyignore.yaml"):
        assert rel in render.CACHE_INPUTS, rel
    assert set(render.CACHE_TOOLS) == {"helm", "trivy", "promtool"}


def test_runbook_change_or_deletion_invalidates_render(ctx: RunContext, render_repo: Path) -> None:
    before = key("render", ctx)
    assert key("render", ctx) == before  # deterministic
    runbook = next((render_repo / "docs/runbooks").glob("*.md"))
    runbook.write_text(runbook.read_text() + "\nOne more step.\n")
    edited = key("render", ctx)
    assert edited != before
    runbook.unlink()
    assert key("render", ctx) not in (before, edited)


def test_crd_schemas_and_ignore_file_invalidate_render(
    ctx: RunContext, render_repo: Path, crd_schemas: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = key("render", ctx)
    # Same location, different content (a schema updated in place).
    copy = tmp_path / "crds"
    shutil.copytree(crd_schemas, copy)
    monkeypatch.setenv("PIPELINE_CRD_SCHEMAS", str(copy))
    at_copy = key("render", ctx)
    schema = next(copy.rglob("*.json"))
    schema.write_text(schema.read_text() + "\n")
    assert key("render", ctx) != at_copy
    # Another location via the option, and a URL template.
    assert key("render", ctx, render.RenderOptions(crd_schemas="https://example.com/{{.Group}}.json")) != before
    # The ignore file render gates with.
    monkeypatch.setenv("PIPELINE_CRD_SCHEMAS", str(crd_schemas))
    (render_repo / ".trivyignore.yaml").write_text("misconfigurations: []\n")
    assert key("render", ctx) != before


def test_test_stage_key_covers_every_tracked_file(ctx: RunContext) -> None:
    assert test.CACHE_INPUTS == (TRACKED,)
    root = ctx.repo_root
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text("v1\n")
    (root / ".gitignore").write_text("ignored.txt\n")
    (root / "ignored.txt").write_text("noise\n")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    listed = {p.relative_to(root.resolve()).as_posix() for p in tracked_files(root) or []}
    assert listed == {".gitignore", "app/model.yaml", "docs/guide.md"}
    before = key("test", ctx, test.TestOptions())
    (root / "ignored.txt").write_text("more noise\n")
    assert key("test", ctx, test.TestOptions()) == before  # git-ignored: not an input
    (root / "docs" / "guide.md").write_text("v2\n")
    assert key("test", ctx, test.TestOptions()) != before  # any tracked file: docs, Makefile, ...
    after_doc = key("test", ctx, test.TestOptions())
    (root / "new_test_data.json").write_text("{}\n")  # untracked, not ignored: pytest may read it
    assert key("test", ctx, test.TestOptions()) != after_doc


def test_test_stage_key_leaves_out_the_model_record_but_not_the_example_record(ctx: RunContext) -> None:
    """The suite runs on tests/example-model.yaml (example_tree): a model-only change does not
    re-run it, a change of the example record the tests assert does."""
    assert test.CACHE_EXCLUDE == ("app/model.yaml",)
    root = ctx.repo_root
    (root / "tests").mkdir()
    shutil.copyfile(root / "app" / "model.yaml", root / "tests" / "example-model.yaml")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    before = key("test", ctx, test.TestOptions())
    record = root / "app" / "model.yaml"
    record.write_text(record.read_text().replace("steps: 600", "steps: 700"))
    assert "steps: 700" in record.read_text()
    assert key("test", ctx, test.TestOptions()) == before
    example = root / "tests" / "example-model.yaml"
    example.write_text(example.read_text().replace("steps: 600", "steps: 700"))
    assert key("test", ctx, test.TestOptions()) != before


def test_tool_identity_follows_links_to_the_same_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout whose .tools links to another's runs the same binaries: same identity, shared results."""
    from pipeline.core import cache

    real = tmp_path / "a" / "helm"
    real.parent.mkdir()
    real.write_text("#!/bin/sh\n")
    link = tmp_path / "b" / "helm"
    link.parent.mkdir()
    link.symlink_to(real)
    monkeypatch.setattr(cache, "find", lambda name: str(real))
    at_real = cache.tool_identity(["helm"])
    monkeypatch.setattr(cache, "find", lambda name: str(link))
    assert cache.tool_identity(["helm"]) == at_real
    real.write_text("#!/bin/sh\nexit 1\n")  # another binary: another identity
    assert cache.tool_identity(["helm"]) != at_real


def test_tracked_falls_back_to_the_tree_outside_git(ctx: RunContext) -> None:
    (ctx.repo_root / "a").mkdir(parents=True)
    (ctx.repo_root / "a" / "x.txt").write_text("1\n")
    assert tracked_files(ctx.repo_root) is None  # not a git checkout: every file under the root counts
    before = key("test", ctx, test.TestOptions())
    (ctx.repo_root / "a" / "x.txt").write_text("2\n")
    assert key("test", ctx, test.TestOptions()) != before


def test_machine_facts_enter_the_keys(ctx: RunContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (ctx.repo_root / "app").mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(build, "detect_engine", lambda: EngineStatus(None, "none"))
    no_engine = key("build", ctx, build.BuildOptions(skip_dist=True))
    monkeypatch.setattr(build, "detect_engine", lambda: EngineStatus(Engine("podman", "/bin/false"), "test engine"))
    assert key("build", ctx, build.BuildOptions(skip_dist=True)) != no_engine
    assert ".dockerignore" in build.CACHE_INPUTS

    # scan: a vulnerability DB appearing turns a SKIPPED check into a real one; ignore entries expire daily.
    no_db = key("scan", ctx, scan.ScanOptions())
    db = Path(str(tmp_path / "trivy-cache")) / "db"
    db.mkdir(parents=True)
    (db / "trivy.db").write_bytes(b"db")
    assert key("scan", ctx, scan.ScanOptions()) != no_db
    assert "today" in scan.cache_extra(scan.ScanOptions(), ctx.repo_root).facts
    assert "today" in render.cache_extra(render.RenderOptions(), ctx.repo_root).facts

    # smoke: the vLLM install and the tiny model live outside the tree.
    paths = smoke.cache_extra(None, ctx.repo_root).paths
    assert any(p.endswith(".vllm-ready.json") for p in paths) and len(paths) == 2
    assert {"app", "loadtests", "uv.lock"} <= set(loadtest.CACHE_INPUTS)
