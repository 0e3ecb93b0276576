"""`unfreeze`: a human lifts the freeze on an env (a rollback's, or `freeze`'s): one commit, who and why."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from rich.console import Console

from pipeline.core.context import RunContext
from pipeline.core.result import CommandResult
from pipeline.gitops import notify
from pipeline.gitops import promotion as pm
from pipeline.gitops.repo import GitOpsRepo, resolve_remote, work_dir_for

log = logging.getLogger(__name__)

NAME = "unfreeze"
HELP = "Lift the freeze on an env after a rollback or a freeze (recorded as a commit)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, choices=pm.ENVS, help="the environment")
    notify.add_change_arguments(parser, who="who takes responsibility for lifting the freeze", notify="the change")
    parser.add_argument("--by", dest="actor", metavar="NAME", help=argparse.SUPPRESS)  # the old spelling of --actor
    parser.add_argument("--reason", default="", metavar="TEXT", help="why it is safe again (recorded)")


def unfreeze(repo: GitOpsRepo, env: str, by: str, reason: str = "") -> str | None:
    """Commit frozen=false for `env`; None if it was not frozen."""
    sha, _ = pm.set_freeze(repo, env, False, pm.Actor(by, "override (--actor)"), reason or "unfrozen")
    return sha


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    who = pm.actor_identity(args.actor, ctx.repo_root)
    repo = GitOpsRepo(resolve_remote(args.gitops_repo, ctx.repo_root), work_dir_for(ctx.run_dir / "work"))
    sha, before = pm.set_freeze(repo, args.env, False, who, args.reason or "unfrozen")
    notice = None
    if sha is not None:
        notice = notify.notify(
            notify.resolve_url(args.notify_url),
            f"{args.env} unfrozen by {who.name}",
            [args.reason or "(no reason given)", f"was frozen since {before.since} by {before.by}: {before.reason}"],
            {"env": args.env, "commit": sha[:12], "actor source": who.source},
        )
        if notice is not None:
            ctx.console.print(notice.line())
    data: dict[str, Any] = {
        "env": args.env,
        "changed": sha is not None,
        "commit": sha,
        "frozen": False,
        "by": who.name,
        "actor_source": who.source,
        "reason": args.reason or None,
        "previous": before.as_dict(),
        "notification": notice.as_dict() if notice else None,
    }

    def render(console: Console) -> None:
        if sha is None:
            console.print(f"{args.env} is not frozen: nothing to do")
        else:
            console.print(f"[green]{args.env} unfrozen by {who.name}[/green] ({sha[:12]})")

    return CommandResult(data=data, render=render)
