"""`drill`: rehearse an automatic rollback end to end on this machine and print the timings."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict

from rich.markup import escape

from pipeline.controller.drill_pods import DrillImages
from pipeline.controller.rollback_drill import DrillConfig, DrillReport, run_drill
from pipeline.core.context import RunContext
from pipeline.core.environments import env_names
from pipeline.core.instant import instant_arg
from pipeline.core.result import CommandResult
from pipeline.runtime.engine import Engine

log = logging.getLogger(__name__)

NAME = "drill"
HELP = "Rollback drill: bad release → real alert → controller reverts in git → sync agent restores → resolved"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env", default=env_names()[1], choices=env_names(), help="env whose release goes bad (default: %(default)s)"
    )
    parser.add_argument(
        "--window",
        help="drill timer: rate window replacing the chart's 5m (default 10s); with --canary the analysis window (15s)",
    )
    parser.add_argument("--error-rate", type=float, default=0.5, help="fault profile of the bad release")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds (default 120, 900 production)")
    parser.add_argument(
        "--production-timers",
        action="store_true",
        help="the chart's rules, scrape/eval intervals and Alertmanager timers unmodified; Argo CD polls every 3 min",
    )
    parser.add_argument(
        "--images-from",
        default=env_names()[0],
        metavar="ENV",
        help="deploy pods of the images the release ENV runs in the GitOps repo (built and pushed by `make ci`)",
    )
    parser.add_argument(
        "--gitops-repo", help="GitOps remote to read --images-from (default: $PIPELINE_GITOPS_REPO or local)"
    )
    parser.add_argument("--processes", action="store_true", help="gateway + simulator processes instead of pods")
    canary = parser.add_argument_group("canary drill (--canary; docs/rollout.md)")
    canary.add_argument("--canary", action="store_true", help="canary drill: the chart's canary steps behind HAProxy")
    canary.add_argument("--fault", choices=["errors", "latency", "none"], default="none", help="the canary's fault")
    canary.add_argument("--json", action="store_true", help="print the canary drill's result as one JSON object")
    canary.add_argument("--replicas", type=int, help="model pods of the env (default: its minimum replicas)")
    canary.add_argument("--interval", default="5s", help="analysis interval replacing the template's (drill timer)")
    parser.add_argument(
        "--at",
        type=instant_arg,
        help="judge sync windows at this ISO 8601 instant (e.g. 2026-12-30T12:00:00Z, inside the year-end freeze)",
    )


def drill_images(args: argparse.Namespace, ctx: RunContext) -> tuple[DrillImages | None, Engine | None, str]:
    """The built images and engine the drill's pods need, or why it runs processes."""
    from pipeline.controller.drill_pods import find_images
    from pipeline.gitops.repo import resolve_remote, work_dir_for
    from pipeline.runtime import engine, registry

    if args.processes:
        return None, None, "--processes"
    status = engine.current()
    reg = registry.status()
    remote = resolve_remote(args.gitops_repo, ctx.repo_root)
    images, why = find_images(
        remote,
        args.images_from,
        work_dir_for(ctx.run_dir / "work", "pins"),
        status.engine,
        status.reason,
        (reg.host, reg.local) if reg else None,
    )
    return images, status.engine if images else None, why


def main(args: argparse.Namespace, ctx: RunContext) -> int | CommandResult:
    if args.canary:
        from pipeline.commands.drill_canary import main as canary_main

        return canary_main(args, ctx)
    timeout = args.timeout or (900.0 if args.production_timers else 120.0)
    images, engine, why = drill_images(args, ctx)
    cfg = DrillConfig(
        env=args.env,
        window=args.window or "10s",
        error_rate=args.error_rate,
        timeout=timeout,
        production=args.production_timers,
        images=images,
        engine=engine,
        processes_because=why,
        at=args.at,
    )
    try:
        report = run_drill(ctx.run_dir / "drill", cfg, progress=ctx.progress)
    except (TimeoutError, RuntimeError) as exc:
        ctx.console.print(f"[bold red]drill: FAILED[/] {exc}\n[dim]logs: {ctx.run_dir / 'drill' / 'logs'}[/dim]")
        return 1
    (ctx.run_dir / "drill.json").write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
    t = report.timings
    if cfg.production:
        return _print_production(ctx, report)
    ctx.console.print("[bold]drill timings[/bold] (drill timers: 1 s scrape/eval, short windows)")
    for key in ("breach_to_firing", "firing_to_webhook", "webhook_to_revert", "revert_to_recovered"):
        ctx.console.print(f"  {key.replace('_to_', ' → '):24} {t[key]:6.1f} s")
    ctx.console.print(f"  {'breach → revert':24} {t['breach_to_revert']:6.1f} s  (target ≤ 30 s)")
    ctx.console.print(f"  {'breach → recovered':24} {t['breach_to_recovered']:6.1f} s")
    ctx.console.print(f"  {'recovered → resolved':24} {t['recovered_to_resolved']:6.1f} s")
    _print_deploy(ctx, report)
    ctx.console.print(f"  traffic: {report.traffic}")
    ctx.console.print(f"  git: {report.git['subject']} — reason: {report.git['reason']}; frozen={report.git['frozen']}")
    ctx.console.print("[bold]production timers[/bold] (from the charts)")
    for k, v in report.production.items():
        ctx.console.print(f"  {k}: {v}")
    if not report.ok:
        for p in report.problems:
            ctx.console.print(f"[red]  problem: {escape(str(p))}[/red]")
        return 1
    ctx.console.print("[bold green]drill: PASSED[/]")
    return 0


def _print_production(ctx: RunContext, report: DrillReport) -> int:
    t = report.timings
    ctx.console.print("[bold]drill timings, production timers[/bold]")
    for k, v in report.production.items():
        ctx.console.print(f"  {k}: {v}")
    steps = (
        ("breach → firing", "breach_to_firing"),
        ("firing → webhook", "firing_to_webhook"),
        ("webhook → revert", "webhook_to_revert"),
        ("revert → sync requested", "revert_to_sync_requested"),
        ("breach → revert", "breach_to_revert"),
        ("breach → sync requested", "breach_to_sync_requested"),
        ("breach → recovered", "breach_to_recovered"),
    )
    for label, key in steps:
        ctx.console.print(f"  {label:26} {t[key]:7.1f} s" + ("  (target ≤ 120 s)" if key == "breach_to_revert" else ""))
    for r in report.argocd:
        ctx.console.print(f"  Argo CD: {r['method']} {r['path']} → HTTP {r['status']}")
    _print_deploy(ctx, report)
    ctx.console.print(f"  traffic: {report.traffic}")
    ctx.console.print(f"  git: {report.git['subject']} — reason: {report.git['reason']}; frozen={report.git['frozen']}")
    for p in report.problems:
        ctx.console.print(f"[red]  problem: {escape(str(p))}[/red]")
    ctx.console.print("[bold green]drill: PASSED[/]" if report.ok else "[bold red]drill: FAILED[/]")
    return 0 if report.ok else 1


def _print_deploy(ctx: RunContext, report: DrillReport) -> None:
    """What the sync agent deployed: each pod played (spec digest, replace time, traffic gap), or processes."""
    ctx.console.print(f"[bold]deployed as {report.deploy}[/bold]")
    for sub in report.substitutions:
        ctx.console.print(f"  substitution: {sub}")
    for play in report.plays:
        gap = f", traffic gap {play['traffic_gap_s']:.1f} s {play['traffic_in_gap']}" if "traffic_gap_s" in play else ""
        ctx.console.print(
            f"  {play['release']:18} at {play['commit'][:12]}: pod spec {play['spec_digest'][:19]}…, "
            f"kube play --replace → ready {play['seconds']:.1f} s{gap}"
        )
    if report.plays:
        ctx.console.print(f"  pod substitutions ({len(report.plays[0]['substitutions'])}, drill.json has each play's):")
        for sub in report.plays[-2]["substitutions"] if len(report.plays) > 1 else report.plays[0]["substitutions"]:
            ctx.console.print(f"    {sub}")
