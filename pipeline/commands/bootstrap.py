"""`bootstrap --check`: what a cluster needs before Argo CD can run this repository, and whether it has it.

Without `--kubeconfig` it prints the plan (offline): every prerequisite of policies/prerequisites.yaml
with its minimum version, how to install it and what verifies it, and every Secret nothing here
creates unconditionally with who provisions it. With `--kubeconfig` it verifies each against the
cluster, read-only (pipeline/checks/cluster_prereqs.py). Exit 0: plan printed or everything met;
1: something missing (each named); 2: usage error; 3: the cluster could not be read.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.checks import cluster_prereqs as cp
from pipeline.checks import prerequisites
from pipeline.core.context import RunContext
from pipeline.core.exit_codes import ExitCode, UsageError
from pipeline.core.result import CommandResult

NAME = "bootstrap"
HELP = "List (offline) or verify (--kubeconfig) every cluster prerequisite: components, StorageClass, Secrets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        required=True,
        help="check the prerequisites (the only mode: nothing is installed or changed)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help="verify against the cluster of this kubeconfig (read-only); without it, print the plan offline",
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: its current-context)")
    parser.add_argument(
        "--file",
        type=Path,
        metavar="FILE",
        help=f"prerequisites file (default: {prerequisites.PREREQUISITES} of this checkout)",
    )


def read_only(args: argparse.Namespace) -> bool:
    return True


def _cluster(kubeconfig: Path, context: str | None) -> cp.Cluster:
    from kubernetes import config

    new_client: Any = config.new_client_from_config  # untyped in the client
    return cp.Cluster(new_client(config_file=str(kubeconfig), context=context))


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    path = args.file or ctx.repo_root / prerequisites.PREREQUISITES
    if args.kubeconfig is not None and not args.kubeconfig.is_file():
        raise UsageError(f"--kubeconfig {args.kubeconfig}: no such file")
    try:
        prereqs = prerequisites.load(path)
    except prerequisites.PrerequisitesError as exc:
        raise UsageError(str(exc)) from exc
    unknown = cp.unknown_checks(prereqs)
    if unknown:
        raise UsageError(f"{path}: verify checks not implemented in cluster_prereqs: {', '.join(unknown)}")
    if args.kubeconfig is None:
        mode, items = "plan", cp.plan(prereqs)
        ctx.console.print("no --kubeconfig: printing the plan, nothing verified")
    else:
        mode = "cluster"
        ctx.console.print(f"verifying against the cluster of {args.kubeconfig} (read-only)")
        items = cp.verify(prereqs, _cluster(args.kubeconfig, args.context))
    met, missing = cp.summary(items)
    names = [f"{i.kind} {i.name}" for i in items if i.status == cp.MISSING]
    if mode == "plan":
        summary = f"{len(items)} prerequisites planned (pass --kubeconfig to verify them)"
    elif missing:
        summary = f"{missing} of {len(items)} prerequisites missing: {', '.join(names)}"
    else:
        summary = f"all {len(items)} prerequisites met"
    data: dict[str, Any] = {
        "verb": NAME,
        "mode": mode,
        "file": str(path),
        "summary": summary,
        "met": met,
        "missing": names,
        "items": [i.as_dict() for i in items],
    }

    def render(console: Console) -> None:
        table = Table("kind", "name", "minimum", "status", "detail", "install", show_lines=False)
        colour = {cp.MET: "green", cp.MISSING: "red", cp.PLANNED: "yellow"}
        for i in items:
            table.add_row(
                i.kind,
                escape(i.name),
                i.minimum,
                f"[{colour[i.status]}]{i.status}[/]",
                escape(i.detail),
                escape(i.install),
            )
        console.print(table)
        console.print(summary, soft_wrap=True)

    code = ExitCode.REFUSED if missing else ExitCode.OK
    return CommandResult(data=data, exit_code=int(code), render=render)
