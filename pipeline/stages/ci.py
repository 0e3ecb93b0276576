"""`ci`: every stage in order — test → build → scan → render → smoke → eval → loadtest → canary_gate → promote (dev).

Stops at the first FAILED stage; promotes to dev only when nothing failed. A SKIPPED stage
(not implemented yet, no engine, no DB, no GPU) never counts as passed: it is listed as an
unproven production check in the summary and the report. Stage results are cached by a hash
of their inputs (pipeline.core.cache), so an unchanged tree re-runs in seconds.

Other stages are called through their modules (imported lazily):
  - `ci_options(upstream: dict[str, StageResult], ctx) -> opts` then `run(opts, ctx)` when the
    module offers that hook;
  - otherwise `run_from_args(<its own parser, defaults + --stage-args>, ctx)`.
Promotion contract: `promote.run(promote.PromoteOptions(to="dev", release=..., evidence=..., run_id=...), ctx)`.
Under the Dagger executor with no GitOps remote outside the container, promotion is SKIPPED
(pipeline.gitops.remote): a commit into the container's own bare repo would be thrown away.

A cached result is served as it was recorded, except by a stage with `rebind_cached(result,
root) -> result` (the test stage: its subject names the commit it ran on, which the promotion
matches with the release's; the key proved the suite's inputs at this commit identical).

Cache keys (pipeline.core.cache): a module's `CACHE_INPUTS` + `CACHE_TOOLS`, less its
`CACHE_EXCLUDE`, plus its `cache_extra(options, root)` when it has one (paths outside the
tree, machine facts).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import shlex
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.core import report
from pipeline.core.cache import Extra, InputHasher, ResultCache, cache_key
from pipeline.core.context import RunContext
from pipeline.core.environments import env_names
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.gitops import remote as gitops_remote

log = logging.getLogger(__name__)

NAME = "ci"
PRINTS_SUMMARY = True  # the stage table, unproven checks and report paths
HELP = "run test → build → scan → render → smoke → eval → loadtest → canary_gate → promote to dev; stop at the first failure"
# `canary_gate` is a stage of ci only (the canary drill, pipeline/stages/canary_gate.py), not a verb of its own.
ORDER = ("test", "build", "scan", "render", "smoke", "eval", "loadtest", "canary_gate", "promote")
GATES = ORDER[:-1]
NOT_IMPLEMENTED = "stage not implemented yet"
# What each stage reads, when its module does not say (module attribute CACHE_INPUTS wins).
DEFAULT_INPUTS: dict[str, tuple[str, ...]] = {
    "smoke": ("app", "pipeline", "pyproject.toml", "uv.lock"),
    "loadtest": ("app", "loadtests", "pipeline", "pyproject.toml", "uv.lock"),
}

# Module lookup is injectable so orchestration tests can use stub stages and a promote recorder.
ModuleLoader = Callable[[str], ModuleType | None]


def load_stage_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"pipeline.stages.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"pipeline.stages.{name}":
            return None
        raise


@dataclass
class CiOptions:
    only: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    no_promote: bool = False
    no_cache: bool = False
    gateway_digest: str | None = None
    vllm_digest: str | None = None
    images: list[str] = field(default_factory=list)
    stage_args: dict[str, list[str]] = field(default_factory=dict)
    crd_schemas: str | None = None  # for render; None = its default
    gitops_repo: str | None = (
        None  # for eval's baseline and promote; None = $PIPELINE_GITOPS_REPO or the local bare repo
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", action="append", default=[], choices=ORDER, help="run only these stages (repeatable)")
    parser.add_argument("--skip", action="append", default=[], choices=ORDER, help="leave out a stage (repeatable)")
    parser.add_argument("--no-promote", action="store_true", help="stop before promoting to dev")
    parser.add_argument("--no-cache", action="store_true", help="re-run every stage; ignore cached results")
    parser.add_argument("--gateway-digest", help="published gateway image digest (Dagger executor)")
    parser.add_argument("--vllm-digest", help="published vLLM image digest (Dagger executor)")
    parser.add_argument(
        "--image", dest="images", action="append", default=[], help="image ref for the vulnerability scan (repeatable)"
    )
    parser.add_argument(
        "--crd-schemas",
        metavar="DIR_OR_URL_TEMPLATE",
        help="CRD JSON schemas for render (default: $PIPELINE_CRD_SCHEMAS or the repository's policies/crd-schemas)",
    )
    parser.add_argument(
        "--gitops-repo", help="GitOps remote to promote into (default: $PIPELINE_GITOPS_REPO or the local one)"
    )
    parser.add_argument(
        "--stage-args",
        action="append",
        default=[],
        metavar="STAGE=ARGS",
        help="extra CLI arguments for one stage, e.g. smoke='--server simulator' (repeatable)",
    )


def parse_stage_args(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        stage, sep, rest = item.partition("=")
        if not sep or stage not in ORDER:
            raise SystemExit(f"--stage-args expects STAGE=ARGS with STAGE one of {', '.join(ORDER)}; got {item!r}")
        out.setdefault(stage, []).extend(shlex.split(rest))
    return out


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    return run(
        CiOptions(
            only=args.only,
            skip=args.skip,
            no_promote=args.no_promote,
            no_cache=args.no_cache,
            gateway_digest=args.gateway_digest,
            vllm_digest=args.vllm_digest,
            images=args.images,
            stage_args=parse_stage_args(args.stage_args),
            crd_schemas=args.crd_schemas,
            gitops_repo=args.gitops_repo,
        ),
        ctx,
    )


def _jsonable(opts: Any) -> Any:
    if dataclasses.is_dataclass(opts) and not isinstance(opts, type):
        return dataclasses.asdict(opts)
    if isinstance(opts, BaseModel):
        return opts.model_dump(mode="json")
    if isinstance(opts, argparse.Namespace):
        return vars(opts)
    return repr(opts)


def _own_options(
    name: str, mod: ModuleType, opts: CiOptions, upstream: dict[str, StageResult], ctx: RunContext | None = None
) -> Any | None:
    """Typed options for the stages this module knows; None → ask the module or its parser."""
    if name == "test" and hasattr(mod, "TestOptions"):
        return mod.TestOptions()
    if name == "build" and hasattr(mod, "BuildOptions"):
        return mod.BuildOptions(gateway_digest=opts.gateway_digest, vllm_digest=opts.vllm_digest)
    if name == "scan" and hasattr(mod, "ScanOptions"):
        # Dockerfiles only: render config-scans the rendered chart itself (same gate, same ignore file).
        built = (upstream["build"].evidence.get("images") or {}) if "build" in upstream else {}
        pushed = {
            n: {"local": i["local"], "ref": i.get("ref") or "", "digest": i["digest"]}
            for n, i in built.items()
            if i.get("digest")
        }
        return mod.ScanOptions(images=list(opts.images), built=pushed)
    if name == "render" and hasattr(mod, "RenderOptions"):
        return mod.RenderOptions(crd_schemas=opts.crd_schemas)
    if name == "eval" and ctx is not None and hasattr(mod, "ci_options"):
        # The baseline is what the remote ci promotes into pins (the same --gitops-repo).
        return dataclasses.replace(mod.ci_options(upstream, ctx), gitops_repo=opts.gitops_repo)
    return None


def _parse_defaults(mod: ModuleType, name: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"pipeline {name}", exit_on_error=False)
    mod.add_arguments(parser)
    return parser.parse_args(argv)


def _prepare(
    name: str, mod: ModuleType, opts: CiOptions, upstream: dict[str, StageResult], ctx: RunContext
) -> tuple[Any, Any, Callable[[], StageResult]]:
    """(options as recorded in the cache key, the options themselves, thunk that runs the stage)."""
    extra = opts.stage_args.get(name)
    typed = None if extra else _own_options(name, mod, opts, upstream, ctx)
    if typed is None and not extra and hasattr(mod, "ci_options") and hasattr(mod, "run"):
        typed = mod.ci_options(upstream, ctx)
    if typed is not None and hasattr(mod, "run"):
        return _jsonable(typed), typed, lambda: mod.run(typed, ctx)
    ns = _parse_defaults(mod, name, extra or [])
    return _jsonable(ns), ns, lambda: mod.run_from_args(ns, ctx)


def stage_cache_key(
    name: str, mod: ModuleType, raw: Any, recorded: Any, ctx: RunContext, hasher: InputHasher, head: str
) -> str:
    """The cache key of one stage run: its inputs, `cache_extra` paths and facts, options, executor, tools."""
    inputs = list(getattr(mod, "CACHE_INPUTS", None) or DEFAULT_INPUTS.get(name, (".",)))
    key_opts: dict[str, Any] = {"options": recorded, "executor": ctx.executor}
    hook = getattr(mod, "cache_extra", None)
    if hook is not None:
        extra: Extra = hook(raw, ctx.repo_root)
        inputs += extra.paths
        key_opts["facts"] = dict(extra.facts)
    if name == "build":  # the release pins name the commit
        key_opts["head"] = head
    return cache_key(
        name,
        root=ctx.repo_root,
        inputs=inputs,
        options=key_opts,
        tools=getattr(mod, "CACHE_TOOLS", ()),
        hasher=hasher,
        exclude=getattr(mod, "CACHE_EXCLUDE", ()),
    )


def _git_head(root: Path) -> str:
    from pipeline.artifacts.source import git_commit

    head, dirty = git_commit(root)
    return f"{head}{'+dirty' if dirty else ''}"


class _Live:
    """Spinner with the stage name and elapsed time on a terminal; plain lines in CI logs."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.progress: Progress | None = None
        if ctx.console.is_terminal:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TimeElapsedColumn(),
                console=ctx.console,
                transient=True,
            )

    def __enter__(self) -> _Live:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def stage(self, name: str) -> Callable[[], None]:
        self.ctx.console.print(f"[bold]▶ {name}[/]")
        if self.progress is None:
            return lambda: None
        task = self.progress.add_task(name, total=None)
        progress = self.progress
        return lambda: progress.remove_task(task)


def _status_style(result: StageResult) -> str:
    return {Status.PASSED: "green", Status.FAILED: "red", Status.SKIPPED: "yellow"}[result.status]


def print_table(ctx: RunContext, results: list[StageResult], not_run: list[str]) -> None:
    table = Table(title="pipeline ci", show_lines=False)
    for col in ("stage", "status", "time", "cached", "summary"):
        table.add_column(col, justify="right" if col == "time" else "left", overflow="fold")
    by_name = {r.stage: r for r in results}
    for name in [*ORDER, *(r.stage for r in results if r.stage not in ORDER)]:
        if name in not_run:
            table.add_row(name, "[dim]NOT RUN[/]", "", "", "stopped before this stage")
            continue
        r = by_name.get(name)
        if r is None:
            continue
        style = _status_style(r)
        table.add_row(
            r.stage,
            f"[{style}]{r.status.value.upper()}[/]",
            f"{r.seconds:.1f}s",
            "cached" if r.cached else "",
            r.summary,
        )
    ctx.console.print(table)


def run(opts: CiOptions, ctx: RunContext, loader: ModuleLoader = load_stage_module) -> StageResult:
    selected = [s for s in ORDER if (not opts.only or s in opts.only) and s not in opts.skip]
    if opts.no_promote and "promote" in selected:
        selected.remove("promote")
    cache = ResultCache()
    hasher = InputHasher()
    head = _git_head(ctx.repo_root)
    results: dict[str, StageResult] = {}
    not_run: list[str] = []
    failed_at: str | None = None
    with Timer() as total, _Live(ctx) as live:
        for name in ORDER:
            if name not in selected:
                why = "left out (--no-promote)" if name == "promote" and opts.no_promote else "left out (--only/--skip)"
                results[name] = StageResult(stage=name, status=Status.SKIPPED, summary=why)
                continue
            if failed_at is not None:
                not_run.append(name)
                continue
            done = live.stage(name)
            try:
                if name == "promote":
                    result = _promote(opts, ctx, loader, results)
                else:
                    result = _run_stage(name, opts, ctx, loader, results, cache, hasher, head)
            finally:
                done()
            results[name] = result
            style = _status_style(result)
            ctx.console.print(
                f"  [{style}]{result.status.value.upper()}[/] {name}"
                f"{' (cached)' if result.cached else ''} {result.seconds:.1f}s — {result.summary}"
            )
            for check in result.failures():
                ctx.console.print(f"    [red]✗ {check.name}[/]: {check.detail}")
            if result.status is Status.FAILED:
                failed_at = name
    hasher.save()
    ordered = [results[n] for n in ORDER if n in results]
    print_table(ctx, ordered, not_run)

    promotion = results.get("promote")
    promoted = promotion is not None and promotion.status is Status.PASSED
    meta: dict[str, Any] = {
        "failed_stage": failed_at,
        "promoted": promoted,
        "promotion": promotion.summary if promotion else None,
        "release": (results["build"].evidence.get("release") if "build" in results else None),
        "wall_seconds": total.seconds,
    }
    paths = report.write_all(ctx.run_dir, ordered, meta=meta, not_run=not_run)
    gaps = report.unproven(ordered)
    if gaps:
        ctx.console.print("[yellow]Unproven production checks (skipped here, not passed):[/]")
        for gap in gaps:
            ctx.console.print(f"  [yellow]- {gap}[/]")
    if failed_at:
        ctx.console.print(f"[bold red]ci FAILED at {failed_at}[/] — nothing promoted")
    elif promoted:
        ctx.console.print(f"[bold green]ci passed; promoted to dev[/]: {promotion.summary if promotion else ''}")
    else:
        ctx.console.print("[yellow]ci passed its gates but did not promote[/]")
    ctx.console.print(f"reports: {paths['report']}, {paths['summary'].name}, {paths['junit'].name}")

    checks = [
        Check(name=r.stage, status=r.status, detail=r.summary, seconds=0.0 if r.cached else r.seconds) for r in ordered
    ]
    checks += [Check(name=n, status=Status.SKIPPED, detail="not run: an earlier stage failed") for n in not_run]
    ci = StageResult.from_checks(
        NAME,
        checks,
        seconds=total.seconds,
        artifacts=[str(p) for p in paths.values()],
        evidence={"failed_stage": failed_at, "promoted": promoted, "unproven": gaps},
        logs=str(ctx.run_dir),
    )
    ci.summary = (
        f"failed at {failed_at}; nothing promoted"
        if failed_at
        else ("promoted to dev" if promoted else "not promoted") + (f"; {len(gaps)} unproven check(s)" if gaps else "")
    )
    return ci


def _run_stage(
    name: str,
    opts: CiOptions,
    ctx: RunContext,
    loader: ModuleLoader,
    upstream: dict[str, StageResult],
    cache: ResultCache,
    hasher: InputHasher,
    head: str,
) -> StageResult:
    mod = loader(name)
    if mod is None:
        return StageResult(stage=name, status=Status.SKIPPED, summary=NOT_IMPLEMENTED)
    try:
        recorded, raw, thunk = _prepare(name, mod, opts, upstream, ctx)
        key = None
        if not opts.no_cache and getattr(mod, "CACHEABLE", True):
            key = stage_cache_key(name, mod, raw, recorded, ctx, hasher, head)
            hit = cache.get(name, key)
            if hit is not None:
                # A stage whose subject is the source tree re-names it: the key proved its inputs identical.
                rebind = getattr(mod, "rebind_cached", None)
                return rebind(hit, ctx.repo_root) if rebind is not None else hit
        with Timer() as t:
            result = thunk()
        if not result.seconds:
            result.seconds = t.seconds
        result.write(ctx.run_dir)
        if key is not None:
            cache.put(name, key, result)
        return result
    except Exception as exc:  # a crashing stage is a failed gate with its traceback, not a crashed ci
        log.debug("stage %s crashed", name, exc_info=True)
        tb = traceback.format_exc(limit=3)
        return StageResult(
            stage=name,
            status=Status.FAILED,
            summary=f"stage raised {type(exc).__name__}: {exc}",
            checks=[Check(name="exception", status=Status.FAILED, detail=tb)],
        )


def _promote(opts: CiOptions, ctx: RunContext, loader: ModuleLoader, upstream: dict[str, StageResult]) -> StageResult:
    failed = [n for n, r in upstream.items() if r.status is Status.FAILED]
    if failed:  # defensive: run() stops earlier, but promotion must never follow a failure
        return StageResult(stage="promote", status=Status.SKIPPED, summary=f"not promoted: {', '.join(failed)} failed")
    mod = loader("promote")
    if mod is None:
        return StageResult(stage="promote", status=Status.SKIPPED, summary=NOT_IMPLEMENTED)
    discarded = gitops_remote.discard_reason(ctx.executor, opts.gitops_repo)
    if discarded is not None:
        return StageResult(stage="promote", status=Status.SKIPPED, summary=f"not promoted: {discarded}")
    from pipeline.gitops.release import release_of

    build = upstream.get("build")
    release = release_of(build) if build is not None and build.status is Status.PASSED else None
    if release is None:
        return StageResult(
            stage="promote", status=Status.SKIPPED, summary="not promoted: no release (build did not pass in this run)"
        )
    evidence = {n: r.model_dump(mode="json") for n, r in upstream.items() if n != "promote"}
    try:
        remote = {"gitops_repo": opts.gitops_repo} if opts.gitops_repo else {}
        popts = mod.PromoteOptions(
            to=env_names()[0], release=release, evidence=evidence, run_id=ctx.run_dir.name, **remote
        )
        with Timer() as t:
            result: StageResult = mod.run(popts, ctx)
    except Exception as exc:  # report the promotion failure; never half-claim success
        log.debug("promote crashed", exc_info=True)
        return StageResult(
            stage="promote",
            status=Status.FAILED,
            summary=f"promote raised {type(exc).__name__}: {exc}",
            checks=[Check(name="exception", status=Status.FAILED, detail=traceback.format_exc(limit=3))],
        )
    if not result.seconds:
        result.seconds = t.seconds
    result.write(ctx.run_dir)
    return result
