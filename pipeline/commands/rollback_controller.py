"""`rollback-controller`: serve the Alertmanager webhook that turns rollback alerts into git reverts."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.core.context import RunContext
from pipeline.core.instant import instant_arg
from pipeline.gitops import promotion as pm
from pipeline.gitops.repo import resolve_remote, safe_url

log = logging.getLogger(__name__)

NAME = "rollback-controller"
HELP = "Alertmanager webhook receiver (v4): revert the bad promotion of an env when its rollback alert fires"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9095, help="port to listen on (default: %(default)s)")
    parser.add_argument("--gitops-repo", help="GitOps remote URL (default: $PIPELINE_GITOPS_REPO or the local one)")
    parser.add_argument("--work-dir", type=Path, help="where the private work copy lives (default: run dir)")
    parser.add_argument("--envs", default=",".join(pm.ENVS), help="envs this controller may roll back")
    parser.add_argument("--rate-limit", type=int, default=1, help="max automatic rollbacks per env per window")
    parser.add_argument("--rate-window", type=float, default=3600.0, help="rate-limit window in seconds")
    parser.add_argument("--stale-tolerance", type=float, default=60.0, help="clock-skew allowance for stale alerts (s)")
    parser.add_argument(
        "--bake-window",
        type=float,
        default=4 * 3600.0,
        help="only a release promoted less than this many seconds ago is rolled back automatically",
    )
    parser.add_argument("--audit-file", type=Path, help="also append audit lines (JSON) to this file")
    parser.add_argument(
        "--sync-window-time",
        type=instant_arg,
        help="drills: judge Argo CD sync windows at this ISO 8601 instant instead of now (e.g. inside a freeze)",
    )


def main(args: argparse.Namespace, ctx: RunContext) -> int:
    import uvicorn

    from pipeline.controller.app import create_app
    from pipeline.controller.config import ControllerConfig

    try:
        cfg = ControllerConfig.from_env(
            resolve_remote(args.gitops_repo, ctx.repo_root),
            args.work_dir or ctx.run_dir / "work",
            envs=tuple(e for e in args.envs.split(",") if e),
            rate_limit=args.rate_limit,
            rate_window=args.rate_window,
            stale_tolerance=args.stale_tolerance,
            bake_window=args.bake_window,
            audit_file=args.audit_file,
            **({"clock": lambda: args.sync_window_time} if args.sync_window_time else {}),
        )
        app = create_app(cfg)
    except ValueError as exc:
        ctx.console.print(f"[red]rollback-controller: {exc}[/red]")
        return 2
    log.info("rollback-controller on %s:%d, GitOps remote %s", args.host, args.port, safe_url(cfg.gitops_repo))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
