"""`history`: what happened to an env, newest first: promotions, rollbacks, freezes, evidence, hand edits.

Read from the GitOps repository's git log alone (the commit trailers, docs/promotion.md); read-only:
the clone lives in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline.core.context import RunContext
from pipeline.core.result import CommandResult
from pipeline.gitops import promotion as pm
from pipeline.gitops.repo import GitOpsRepo, safe_url, work_dir_for

log = logging.getLogger(__name__)

NAME = "history"
HELP = "An env's promotions, rollbacks, freezes and unfreezes from the GitOps repo's git log, newest first"
KIND_STYLE = {"promote": "green", "rollback": "red", "freeze": "red", "unfreeze": "yellow", "evidence": "cyan"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", required=True, choices=pm.ENVS, help="the environment")
    parser.add_argument(
        "--limit",
        type=_positive,
        default=50,
        metavar="N",
        help="at most N changes, newest first (default: %(default)s)",
    )
    parser.add_argument(
        "--gitops-repo", metavar="URL", help="GitOps remote URL (default: $PIPELINE_GITOPS_REPO or the local one)"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def read_only(args: argparse.Namespace) -> bool:
    return True


def _what(entry: dict[str, Any]) -> str:
    kind = entry["kind"]
    if kind == "promote":
        approvals = f"; approved by {', '.join(entry['approved_by'])}" if entry["approved_by"] else ""
        return f"{entry['release']} from {entry['from']}{approvals}"
    if kind == "rollback":
        return f"{entry['reverted_release']} → {entry['release']} ({entry['trigger']}): {entry['reason']}; frozen"
    if kind in ("freeze", "unfreeze"):
        return str(entry["reason"] or "")
    return str(entry["subject"])


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    remote = pm.remote_for_reading(args.gitops_repo, ctx.repo_root, ctx.run_dir)
    repo = GitOpsRepo(remote, work_dir_for(ctx.run_dir / "work"))
    repo.sync()
    entries = pm.env_history(repo, args.env, args.limit)

    def render(console: Console) -> None:
        table = Table(title=f"{args.env} history ({safe_url(remote)}), newest first")
        for col in ("at", "kind", "by", "what", "commit"):
            table.add_column(col, overflow="fold")
        for e in entries:
            style = KIND_STYLE.get(e["kind"], "")
            table.add_row(e["at"], Text(e["kind"], style=style), Text(e["by"]), Text(_what(e)), e["commit"][:12])
        console.print(table)

    return CommandResult(data=entries, render=render)
