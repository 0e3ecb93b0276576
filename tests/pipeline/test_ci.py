"""Orchestration of `ci` with stub stages and a promote recorder (no real tools run)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.context import RunContext
from pipeline.core.result import Check, StageResult, Status
from pipeline.gitops.release import Release
from pipeline.stages import ci

RELEASE = Release(
    id="0.1.0+gabc1234",
    commit="abc1234" * 5 + "abcde",
    chart_version="0.1.0",
    gateway_digest="sha256:" + "a" * 64,
    vllm_digest="sha256:" + "b" * 64,
    model_revision="rev1",
    images_built=False,
)


def stub_stage(name: str, status: Status, calls: list[str], evidence: dict[str, Any] | None = None) -> types.ModuleType:
    mod = types.ModuleType(f"stub_{name}")
    mod.NAME = name  # type: ignore[attr-defined]
    mod.CACHE_INPUTS = ("src",)  # type: ignore[attr-defined]

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--flavour", default="plain")

    def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
        calls.append(name)
        check = Check(name=f"{name}-check", status=status, detail=f"{name} {status.value} ({args.flavour})")
        return StageResult.from_checks(name, [check], summary=check.detail, evidence=evidence or {})

    mod.add_arguments = add_arguments  # type: ignore[attr-defined]
    mod.run_from_args = run_from_args  # type: ignore[attr-defined]
    return mod


@dataclass
class PromoteRecorder:
    calls: list[Any]

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("stub_promote")

        @dataclass
        class PromoteOptions:
            to: str
            release: Release | None = None
            evidence: dict[str, Any] | None = None
            run_id: str | None = None
            gitops_repo: str | None = None

        def run(opts: PromoteOptions, ctx: RunContext) -> StageResult:
            self.calls.append(opts)
            return StageResult(
                stage="promote", status=Status.PASSED, summary=f"promoted {opts.release and opts.release.id}"
            )

        mod.PromoteOptions = PromoteOptions  # type: ignore[attr-defined]
        mod.run = run  # type: ignore[attr-defined]
        return mod


def make_loader(statuses: dict[str, Status | None], calls: list[str], promoted: list[Any]) -> ci.ModuleLoader:
    mods: dict[str, types.ModuleType | None] = {}
    for name in ci.GATES:
        status = statuses.get(name, Status.PASSED)
        evidence = {"release": RELEASE.model_dump(mode="json")} if name == "build" else None
        mods[name] = None if status is None else stub_stage(name, status, calls, evidence)
    mods["promote"] = PromoteRecorder(promoted).module()
    return lambda name: mods[name]


@pytest.fixture
def repo(ctx: RunContext) -> Path:
    (ctx.repo_root / "src").mkdir(parents=True)
    (ctx.repo_root / "src" / "a.py").write_text("x = 1\n")
    return ctx.repo_root


def test_all_pass_promotes_to_dev_with_release_and_evidence(ctx: RunContext, repo: Path) -> None:
    calls: list[str] = []
    promoted: list[Any] = []
    result = ci.run(ci.CiOptions(), ctx, loader=make_loader({}, calls, promoted))
    assert result.status is Status.PASSED
    assert calls == list(ci.GATES)
    assert len(promoted) == 1
    opts = promoted[0]
    assert opts.to == "dev" and opts.release == RELEASE and opts.run_id == ctx.run_dir.name
    assert set(opts.evidence) == set(ci.GATES)
    report = json.loads((ctx.run_dir / "report.json").read_text())
    assert report["status"] == "passed" and report["promoted"] is True


def test_failed_stage_stops_ci_and_nothing_is_promoted(ctx: RunContext, repo: Path) -> None:
    calls: list[str] = []
    promoted: list[Any] = []
    result = ci.run(ci.CiOptions(), ctx, loader=make_loader({"scan": Status.FAILED}, calls, promoted))
    assert result.status is Status.FAILED
    assert "scan" in result.summary
    assert calls == ["test", "build", "scan"]  # stopped at the first failed gate
    assert promoted == []
    report = json.loads((ctx.run_dir / "report.json").read_text())
    assert report["failed_stage"] == "scan" and report["promoted"] is False
    assert report["not_run"] == ["render", "smoke", "eval", "loadtest", "canary_gate", "promote"]
    summary = (ctx.run_dir / "summary.md").read_text()
    assert "scan-check" in summary and "FAILED" in summary


def test_missing_stage_is_skipped_never_passed_and_listed_unproven(ctx: RunContext, repo: Path) -> None:
    promoted: list[Any] = []
    result = ci.run(ci.CiOptions(), ctx, loader=make_loader({"render": None}, [], promoted))
    report = json.loads((ctx.run_dir / "report.json").read_text())
    render = next(s for s in report["stages"] if s["stage"] == "render")
    assert render["status"] == "skipped" and render["summary"] == ci.NOT_IMPLEMENTED
    assert any(u.startswith("render:") for u in report["unproven"])
    assert result.status is Status.PASSED and len(promoted) == 1  # skipped allowed, but listed


def test_all_skipped_is_not_a_pass(ctx: RunContext, repo: Path) -> None:
    statuses: dict[str, Status | None] = dict.fromkeys(ci.GATES, Status.SKIPPED)
    promoted: list[Any] = []
    result = ci.run(ci.CiOptions(no_promote=True), ctx, loader=make_loader(statuses, [], promoted))
    assert result.status is Status.SKIPPED
    assert json.loads((ctx.run_dir / "report.json").read_text())["status"] == "skipped"


def test_no_promote_only_and_skip(ctx: RunContext, repo: Path) -> None:
    calls: list[str] = []
    promoted: list[Any] = []
    ci.run(
        ci.CiOptions(only=["test", "build", "promote"], skip=["build"]), ctx, loader=make_loader({}, calls, promoted)
    )
    assert calls == ["test"]
    assert promoted == []  # no build in this run → no release → no promotion
    calls.clear()
    ci.run(ci.CiOptions(no_promote=True, no_cache=True), ctx, loader=make_loader({}, calls, promoted))
    assert promoted == []


def test_crashing_stage_is_a_failed_gate(ctx: RunContext, repo: Path) -> None:
    calls: list[str] = []
    promoted: list[Any] = []
    loader = make_loader({}, calls, promoted)
    broken = types.ModuleType("broken")
    broken.add_arguments = lambda p: None  # type: ignore[attr-defined]

    def boom(args: argparse.Namespace, ctx: RunContext) -> StageResult:
        raise RuntimeError("kaput")

    broken.run_from_args = boom  # type: ignore[attr-defined]
    result = ci.run(ci.CiOptions(), ctx, loader=lambda n: broken if n == "build" else loader(n))
    assert result.status is Status.FAILED and "build" in result.summary
    assert promoted == []


def test_cache_hit_on_unchanged_tree_and_miss_on_changed_file(ctx: RunContext, repo: Path) -> None:
    calls: list[str] = []
    promoted: list[Any] = []
    loader = make_loader({}, calls, promoted)
    ci.run(ci.CiOptions(no_promote=True), ctx, loader=loader)
    assert calls == list(ci.GATES)

    calls.clear()
    second = ci.run(ci.CiOptions(no_promote=True), ctx, loader=loader)
    assert calls == []  # everything from the cache
    report = json.loads((ctx.run_dir / "report.json").read_text())
    assert all(s["cached"] for s in report["stages"] if s["status"] == "passed")
    assert second.status is Status.PASSED

    (repo / "src" / "a.py").write_text("x = 2\n")
    calls.clear()
    ci.run(ci.CiOptions(no_promote=True), ctx, loader=loader)
    assert calls == list(ci.GATES)

    calls.clear()
    ci.run(ci.CiOptions(no_promote=True, no_cache=True), ctx, loader=loader)
    assert calls == list(ci.GATES)


def test_failed_results_are_not_cached(ctx: RunContext, repo: Path) -> None:
    calls: list[str] = []
    loader = make_loader({"test": Status.FAILED}, calls, [])
    ci.run(ci.CiOptions(), ctx, loader=loader)
    ci.run(ci.CiOptions(), ctx, loader=loader)
    assert calls == ["test", "test"]


def test_stage_args_reach_the_stage_and_the_cache_key(ctx: RunContext, repo: Path) -> None:
    calls: list[str] = []
    loader = make_loader({}, calls, [])
    ci.run(ci.CiOptions(no_promote=True, only=["smoke"]), ctx, loader=loader)
    ci.run(
        ci.CiOptions(no_promote=True, only=["smoke"], stage_args={"smoke": ["--flavour", "spicy"]}), ctx, loader=loader
    )
    assert calls == ["smoke", "smoke"]
    assert "spicy" in json.loads((ctx.run_dir / "smoke.json").read_text())["summary"]
    with pytest.raises(SystemExit):
        ci.parse_stage_args(["nosuchstage=--x"])


def test_junit_is_well_formed(ctx: RunContext, repo: Path) -> None:
    ci.run(ci.CiOptions(), ctx, loader=make_loader({"smoke": Status.FAILED}, [], []))
    root = ET.parse(ctx.run_dir / "junit.xml").getroot()  # noqa: S314 - our own output
    assert root.tag == "testsuites"
    assert int(root.get("failures", "0")) == 1
    names = [s.get("name") for s in root.iter("testsuite")]
    assert names[:5] == ["test", "build", "scan", "render", "smoke"]
    failure = root.find(".//testsuite[@name='smoke']/testcase/failure")
    assert failure is not None and "smoke failed" in (failure.get("message") or "")


def test_dagger_without_gitops_remote_skips_promotion_never_passes(
    ctx: RunContext, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIPELINE_GITOPS_REPO", raising=False)
    promoted: list[Any] = []
    dagger_ctx = dataclasses.replace(ctx, executor="dagger")
    result = ci.run(ci.CiOptions(), dagger_ctx, loader=make_loader({}, [], promoted))
    assert promoted == []  # the container's own bare repo would be thrown away with it
    report = json.loads((ctx.run_dir / "report.json").read_text())
    promote = next(s for s in report["stages"] if s["stage"] == "promote")
    assert promote["status"] == "skipped"
    assert (
        promote["summary"]
        == "not promoted: no GitOps remote configured; promotion would be discarded with the container"
    )
    assert report["promoted"] is False and any(u.startswith("promote:") for u in report["unproven"])
    assert result.status is not Status.FAILED

    # A path inside the container is no better than the default.
    ci.run(ci.CiOptions(gitops_repo="/tmp/gitops.git"), dagger_ctx, loader=make_loader({}, [], promoted))
    assert promoted == []

    # A real remote (--gitops-repo or $PIPELINE_GITOPS_REPO) is promoted into.
    remote = "ssh://git@git.example.com/llm/gitops.git"
    ci.run(ci.CiOptions(gitops_repo=remote), dagger_ctx, loader=make_loader({}, [], promoted))
    assert [o.gitops_repo for o in promoted] == [remote]
    monkeypatch.setenv("PIPELINE_GITOPS_REPO", "git@git.example.com:llm/gitops.git")
    ci.run(ci.CiOptions(), dagger_ctx, loader=make_loader({}, [], promoted))
    assert len(promoted) == 2


def test_gitops_remote_discard_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.gitops import remote as gr

    # `None` means "no remote given": the caller's $PIPELINE_GITOPS_REPO must not stand in for it.
    monkeypatch.delenv("PIPELINE_GITOPS_REPO", raising=False)

    assert gr.discard_reason("local", None) is None  # the local bare repo persists
    assert gr.discard_reason("dagger", None) == gr.NO_REMOTE
    for url in ("/srv/gitops.git", "file:///x/gitops.git", "gitops.git", "./gitops"):
        assert gr.discard_reason("dagger", url) is not None, url
    for url in ("ssh://git@h/x.git", "https://h/x.git", "git@h:x/y.git", "h.example.com:x/y.git"):
        assert gr.discard_reason("dagger", url) is None, url


def test_scan_is_not_given_a_render_dir_render_scans_its_own_output(ctx: RunContext) -> None:
    from pipeline.stages import render, scan

    rendered = StageResult(stage="render", status=Status.PASSED, evidence={"out": "/x", "render_dir": "/x"})
    opts = ci._own_options("scan", scan, ci.CiOptions(), {"render": rendered})
    assert opts is not None and opts.render_dir is None
    assert ci.ORDER.index("scan") < ci.ORDER.index("render")
    ropts = ci._own_options("render", render, ci.CiOptions(crd_schemas="/schemas"), {})
    assert isinstance(ropts, render.RenderOptions) and ropts.crd_schemas == "/schemas"


def test_a_cache_hit_is_rebound_by_the_stage_that_asks(ctx: RunContext, repo: Path) -> None:
    """`rebind_cached(result, root)`: the test stage re-names its source subject on a hit; only on a hit."""
    calls: list[str] = []
    loader = make_loader({}, calls, [])
    rebound: list[str] = []

    def rebind(result: StageResult, root: Path) -> StageResult:
        rebound.append(result.stage)
        return result.model_copy(update={"evidence": {**result.evidence, "subject": {"commit": "now"}}})

    mod = loader("test")
    assert mod is not None
    mod.rebind_cached = rebind  # type: ignore[attr-defined]
    ci.run(ci.CiOptions(no_promote=True), ctx, loader=loader)
    assert rebound == []  # a fresh run records its own subject
    ci.run(ci.CiOptions(no_promote=True), ctx, loader=loader)
    assert rebound == ["test"]
    report = json.loads((ctx.run_dir / "report.json").read_text())
    test_stage = next(s for s in report["stages"] if s["stage"] == "test")
    assert test_stage["cached"] and test_stage["evidence"]["subject"] == {"commit": "now"}
