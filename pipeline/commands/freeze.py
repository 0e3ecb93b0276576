"""`freeze`: stop promotions into an env (the inverse of `unfreeze`): one commit, who and why.

Freeze state is `environments/<env>/freeze.yaml` (frozen, since, by, reason), the same file a
rollback sets; the promotion policy refuses every promotion into a frozen env until `unfreeze`.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from rich.console import Console
from rich.markup import escape

from pipeline.core.context import RunContext
from pipeline.core.result import CommandResult
from pipeline.gitops import notify
from pipeline.gitops import promotion as pm
from pipeline.gitops.repo import GitOpsRepo, resolve_remote, work_dir_for

log = logging.getLogger(__name__)

NAME = "freeze"
HELP = "Freeze an env: every promotion into it is refused until `unfreeze` (recorded as a commit)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, choices=pm.ENVS, help="the environment")
    notify.add_change_arguments(parser, who="who freezes it", notify="the freeze")
    parser.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded in the commit and freeze.yaml)")


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    who = pm.actor_identity(args.actor, ctx.repo_root)
    repo = GitOpsRepo(resolve_remote(args.gitops_repo, ctx.repo_root), work_dir_for(ctx.run_dir / "work"))
    sha, before = pm.set_freeze(repo, args.env, True, who, args.reason)
    notice = None
    if sha is not None:
        notice = notify.notify(
            notify.resolve_url(args.notify_url),
            f"{args.env} frozen by {who.name}",
            [args.reason, f"Promotions into {args.env} are refused until someone runs `unfreeze --env {args.env}`."],
            {"env": args.env, "commit": sha[:12], "actor source": who.source},
        )
        if notice is not None:
            ctx.console.print(notice.line())
    data: dict[str, Any] = {
        "env": args.env,
        "changed": sha is not None,
        "commit": sha,
        "frozen": True,
        "by": who.name if sha else before.by,
        "actor_source": who.source if sha else None,
        "reason": args.reason if sha else before.reason,
        "since": None if sha else before.since,
        "notification": notice.as_dict() if notice else None,
    }

    def render(console: Console) -> None:
        if sha is None:
            console.print(
                f"{args.env} is already frozen (since {before.since} by {before.by}: {escape(before.reason)})"
            )
        else:
            console.print(f"[red]{args.env} frozen[/red] by {who.name}: {escape(args.reason)} ({sha[:12]})")

    return CommandResult(data=data, render=render)
