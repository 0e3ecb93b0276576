"""`drill --canary`: the canary drill (pipeline.controller.canary_drill). `--json` (or `-o json`) prints its
result as one JSON object on stdout; the human view otherwise."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape

from pipeline.controller.canary_drill import CanaryConfig, run_canary_drill
from pipeline.core.context import RunContext
from pipeline.core.exit_codes import ExitCode
from pipeline.core.result import CommandResult
from pipeline.rollout.targets import EXPECTED_VERDICT
from pipeline.runtime.procs import ProcessFailed

# Exit codes: 0 the drill ran and gave the verdict its fault calls for (aborted for errors/latency,
# promoted for none: pipeline.rollout.targets, whose other targets ci's canary_gate judges) without a
# problem; 1 otherwise (a "paused" verdict included: an Inconclusive analysis waits for a human); 3 the
# drill could not run.
EXPECTED = EXPECTED_VERDICT
KEYS = (
    "verdict",
    "paused",
    "exposed_fraction",
    "abort_seconds",
    "failed_requests",
    "broken_streams",
    "max_model_pods",
    "replicas",
)


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    # Pods when an engine plays them and the release `--images-from` runs has built images in a serving
    # registry (as the rollback drill finds them); `--processes` or anything missing: processes, and why.
    from pipeline.commands.drill import drill_images

    images, engine, why = drill_images(args, ctx)
    cfg = CanaryConfig(
        env=args.env,
        fault=args.fault,
        interval=args.interval,
        window=args.window or CanaryConfig.window,
        replicas=args.replicas,
        timeout=args.timeout or 240.0,
        gitops_repo=args.gitops_repo,
        engine=engine,
        images=images.pod if images else None,
        processes_because=why,
    )
    work = ctx.run_dir / "canary-drill"
    try:
        report = run_canary_drill(work, cfg, progress=ctx.progress)
    except (TimeoutError, RuntimeError, ProcessFailed, ValueError) as exc:
        ctx.console.print(f"[bold red]canary drill: FAILED[/] {escape(str(exc))}\n[dim]logs: {escape(str(work))}[/dim]")
        return CommandResult({"verdict": "error", "error": str(exc)}, int(ExitCode.ERROR))
    data = asdict(report)
    (ctx.run_dir / "canary-drill.json").write_text(json.dumps(data, indent=2) + "\n")
    ok = report.verdict == EXPECTED[cfg.fault] and not report.problems
    code = int(ExitCode.OK if ok else ExitCode.REFUSED)

    def render(console: Console) -> None:
        if args.json:
            console.file.write(json.dumps(data) + "\n")
        else:
            _table(console, data, cfg)

    return CommandResult(data, code, render)


def _table(console: Console, data: dict[str, Any], cfg: CanaryConfig) -> None:
    console.print(f"canary drill (fault {cfg.fault}, env {cfg.env}, deployed as {data['deploy']})")
    for key in KEYS:
        console.print(f"  {key:18} {data[key]}")
    if data["failing"]:
        console.print(f"  failing metric     {data['failing']['metric']} {data['failing']['values']}")
    for sub in data["substitutions"]:
        console.print(f"  substitution: {escape(str(sub))}")
    console.print(f"  evidence: {data['evidence'].get('path')} at {str(data['evidence'].get('sha'))[:12]}")
    for p in data["problems"]:
        console.print(f"  problem: {escape(str(p))}")
