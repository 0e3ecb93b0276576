"""`drill`: rehearse an automatic rollback end to end on this machine and print the timings."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict

from pipeline.controller.rollback_drill import DrillConfig, DrillReport, run_drill
from pipeline.core.context import RunContext

log = logging.getLogger(__name__)

NAME = "drill"
HELP = "Rollback drill: bad release → real alert → controller reverts in git → sync agent restores → resolved"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="staging", choices=("dev", "staging", "prod"))
    parser.add_argument("--window", default="10s", help="rate window replacing the chart's 5m (drill timer)")
    parser.add_argument("--error-rate", type=float, default=0.5, help="fault profile of the bad release")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds (default 120, 900 production)")
    parser.add_argument(
        "--production-timers",
        action="store_true",
        help="the chart's rules, scrape/eval intervals and Alertmanager timers unmodified; Argo CD polls every 3 min",
    )


def main(args: argparse.Namespace, ctx: RunContext) -> int:
    timeout = args.timeout or (900.0 if args.production_timers else 120.0)
    cfg = DrillConfig(
        env=args.env, window=args.window, error_rate=args.error_rate, timeout=timeout, production=args.production_timers
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
    ctx.console.print(f"  traffic: {report.traffic}")
    ctx.console.print(f"  git: {report.git['subject']} — reason: {report.git['reason']}; frozen={report.git['frozen']}")
    ctx.console.print("[bold]production timers[/bold] (from the charts)")
    for k, v in report.production.items():
        ctx.console.print(f"  {k}: {v}")
    if not report.ok:
        for p in report.problems:
            ctx.console.print(f"[red]  problem: {p}[/red]")
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
    ctx.console.print(f"  traffic: {report.traffic}")
    ctx.console.print(f"  git: {report.git['subject']} — reason: {report.git['reason']}; frozen={report.git['frozen']}")
    for p in report.problems:
        ctx.console.print(f"[red]  problem: {p}[/red]")
    ctx.console.print("[bold green]drill: PASSED[/]" if report.ok else "[bold red]drill: FAILED[/]")
    return 0 if report.ok else 1
