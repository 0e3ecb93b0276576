"""`unfreeze`: a human lifts the freeze a rollback put on an env (one commit, who and why)."""

from __future__ import annotations

import argparse
import logging

from pipeline.core.context import RunContext
from pipeline.gitops import promotion as pm
from pipeline.gitops.repo import GitOpsError, GitOpsRepo, Message, edit_yaml, resolve_remote, work_dir_for

log = logging.getLogger(__name__)

NAME = "unfreeze"
HELP = "Lift the freeze on an env after a rollback (recorded as a commit)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, choices=pm.ENVS)
    parser.add_argument("--by", required=True, help="who takes responsibility for lifting the freeze")
    parser.add_argument("--reason", default="", help="why it is safe again")
    parser.add_argument("--gitops-repo", help="GitOps remote URL (default: $PIPELINE_GITOPS_REPO or the local one)")


def unfreeze(repo: GitOpsRepo, env: str, by: str, reason: str = "") -> str | None:
    """Commit frozen=false for `env`; None if it was not frozen."""

    def mutate(r: GitOpsRepo) -> Message | None:
        pm.validate_env_yaml(r, env)
        state = pm.read_freeze(r, env)
        if not state.frozen:
            return None
        edit_yaml(
            r.file(pm.freeze_path(env)),
            {("frozen",): False, ("since",): pm.iso(pm.utcnow()), ("by",): by, ("reason",): reason or "unfrozen"},
            pm.freeze_path(env),
        )
        return Message(
            subject=f"unfreeze({env}): by {by}",
            body=f"Frozen since {state.since} by {state.by}: {state.reason}",
            trailers=[("Unfreeze-Env", env), ("Unfrozen-By", by), ("Unfreeze-Reason", reason or "-")],
            author=by,
        )

    return repo.transact(mutate).sha


def main(args: argparse.Namespace, ctx: RunContext) -> int:
    try:
        repo = GitOpsRepo(resolve_remote(args.gitops_repo, ctx.repo_root), work_dir_for(ctx.run_dir / "work"))
        sha = unfreeze(repo, args.env, args.by, args.reason)
    except GitOpsError as exc:
        ctx.console.print(f"[red]unfreeze: {exc} (nothing pushed)[/red]")
        return 1
    if sha is None:
        ctx.console.print(f"{args.env} is not frozen: nothing to do")
    else:
        ctx.console.print(f"[green]{args.env} unfrozen by {args.by}[/green] ({sha[:12]})")
    return 0
