"""`rollback`: restore the previous good release of an env as a revert commit, and freeze it.

The revert itself (one commit: revert + freeze, never a history rewrite) is
`pipeline.gitops.revert.execute`, which the rollback controller calls too.
"""

from __future__ import annotations

import argparse
import logging

from pipeline.core.context import RunContext
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.gitops import notify, values_diff
from pipeline.gitops import promotion as pm
from pipeline.gitops.repo import GitOpsRepo, resolve_remote, work_dir_for
from pipeline.gitops.revert import RollbackOptions, execute

log = logging.getLogger(__name__)

NAME = "rollback"
HELP = "Revert the last promotion of an env (or back to --to COMMIT), record why, and freeze the env"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, choices=pm.ENVS, help="the environment to roll back")
    parser.add_argument(
        "--to",
        metavar="COMMIT",
        help="restore the pins as of this GitOps commit (default: undo the last promotion)",
    )
    parser.add_argument("--reason", default="", metavar="TEXT", help="why (recorded in the commit and the freeze file)")
    notify.add_change_arguments(parser, who="who rolls back", notify="the rollback")


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    opts = RollbackOptions(env=args.env, to=args.to, reason=args.reason, actor=args.actor, gitops_repo=args.gitops_repo)
    return run(opts, ctx, notify_url=args.notify_url)


def run(opts: RollbackOptions, ctx: RunContext, *, notify_url: str | None = None) -> StageResult:
    with Timer() as t:
        remote = resolve_remote(opts.gitops_repo, ctx.repo_root)
        out = execute(opts, GitOpsRepo(remote, work_dir_for(ctx.run_dir / "work")))
    status = {"rolled_back": Status.PASSED, "noop": Status.PASSED}.get(out.status, Status.FAILED)
    checks = [Check(name=out.status, status=status, detail=out.detail)]
    if out.values:
        # What the rollback ships besides the pins (docs/rollback.md): printed and in the commit trailers.
        checks.append(Check(name="values", status=Status.PASSED, detail=values_diff.summary(out.values)))
    notice = None
    if out.status == "rolled_back" and out.sha:
        actor = pm.actor_name(opts.actor)
        notice = notify.notify(
            notify.resolve_url(notify_url),
            f"{opts.env} rolled back: {out.reverted} → {out.restored}",
            [
                f"*Reason*: {opts.reason or f'manual rollback by {actor}'}",
                f"{opts.env} is frozen until `unfreeze --env {opts.env}`.",
                values_diff.summary(out.values),
            ],
            {"env": opts.env, "by": actor, "commit": out.sha[:12], "trigger": opts.trigger},
        )
        if notice is not None:
            ctx.console.print(notice.line())
    return StageResult.from_checks(
        NAME,
        checks,
        summary=out.detail,
        seconds=t.seconds,
        # "error": no verdict reached (remote unreachable, broken YAML): exit 3; "refused": nothing to roll back.
        error=out.status == "error",
        evidence={
            "env": opts.env,
            "commit": out.sha,
            "pin_commit": out.pin_sha,
            "restored": out.restored,
            "reverted": out.reverted,
            "values_diff": out.values,
            "notification": notice.as_dict() if notice else None,
        },
    )
