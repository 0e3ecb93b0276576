"""`registry mirror`: back an env's release up into a second registry, or restore it from there.

    python -m pipeline registry mirror --env prod --to backup.example.com/llm      # backup
    python -m pipeline registry mirror --env prod --from backup.example.com/llm    # restore

Copies the gateway and vLLM images and the model artifact the env pins, each BY DIGEST
(pipeline.gitops.release_mirror, skopeo), and checks that the destination serves the same
digest. A repository keeps its path below the registry, so the release's pins resolve in the
mirror by rewriting only `release.registry`. Copies are idempotent: a failed run is re-run.
Exit codes: 0 all copied and verified, 1 the release cannot be copied (nothing pinned, pins
missing), 2 bad options, 3 a copy failed (the document says which were done).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.core.context import RunContext
from pipeline.core.environments import env_names
from pipeline.core.exit_codes import ExitCode, UsageError
from pipeline.core.result import CommandResult
from pipeline.runtime.skopeo import SkopeoError

# Options only the `mirror` action takes (the other actions refuse them).
OPTIONS = ("env", "to", "from_registry", "tls_verify", "gitops_repo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mirror (backup / restore of an env's release)")
    group.add_argument("--env", choices=env_names(), help="the environment whose pinned release is copied")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--to", metavar="REGISTRY", help="back up into this registry (host[:port][/path])")
    where.add_argument(
        "--from",
        dest="from_registry",
        metavar="REGISTRY",
        help="restore from this mirror into the release's own registry",
    )
    group.add_argument(
        "--tls-verify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TLS for the --to/--from registry (default: verified unless on loopback)",
    )
    group.add_argument(
        "--gitops-repo", metavar="URL", help="GitOps remote URL (default: $PIPELINE_GITOPS_REPO or the local one)"
    )


def given(args: argparse.Namespace) -> list[str]:
    """The mirror options on the command line (for refusing them on the other actions)."""
    return [f"--{o.replace('_registry', '').replace('_', '-')}" for o in OPTIONS if getattr(args, o, None) is not None]


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    # Imported here: `registry start|stop|status` must not need platform.yaml or the GitOps code.
    from pipeline.gitops import promotion as pm
    from pipeline.gitops import release_mirror as rm
    from pipeline.gitops.repo import GitOpsRepo, safe_url, work_dir_for

    if not args.env:
        raise UsageError("registry mirror needs --env ENV")
    if not (args.to or args.from_registry):
        raise UsageError("registry mirror needs --to REGISTRY (backup) or --from REGISTRY (restore)")
    direction: rm.Direction = "mirror" if args.to else "restore"
    field = "--to" if args.to else "--from"
    try:
        rm.check_registry(args.to or args.from_registry, field)
    except rm.MirrorPlanError as exc:
        raise UsageError(str(exc)) from exc

    remote = pm.remote_for_reading(args.gitops_repo, ctx.repo_root, ctx.run_dir)
    repo = GitOpsRepo(remote, work_dir_for(ctx.run_dir / "work"))
    repo.sync()
    release = pm.read_release(repo, args.env)
    data: dict[str, Any] = {
        "env": args.env,
        "direction": direction,
        "gitops_repo": safe_url(remote),
        "release": release.id if release else None,
        "registry": release.registry if release else None,
        field.removeprefix("--"): args.to or args.from_registry,
        "artifacts": [],
        "seconds": 0.0,
        "error": None,
    }
    if release is None:
        data["error"] = f"{args.env} pins no release: nothing to copy"
        return _result(data, ExitCode.REFUSED)
    try:
        transfers = rm.plan(release, args.to or args.from_registry, direction, tls_verify=args.tls_verify, field=field)
    except rm.MirrorPlanError as exc:
        data["error"] = str(exc)
        return _result(data, ExitCode.REFUSED)
    t0 = time.monotonic()
    for t in transfers:
        ctx.console.print(f"copying {t.artifact}: {escape(t.source)}@{t.digest[:19]}… → {escape(t.destination)}")
        try:
            done = rm.copy(t)
        except SkopeoError as exc:
            data["error"] = f"{t.artifact}: {exc}"
            break
        data["artifacts"].append(
            {
                "artifact": t.artifact,
                "source": done.source,
                "destination": done.destination,
                "digest": done.digest,
                "verified": True,
                "seconds": done.seconds,
            }
        )
    data["seconds"] = round(time.monotonic() - t0, 3)
    return _result(data, ExitCode.ERROR if data["error"] else ExitCode.OK)


def _result(data: dict[str, Any], code: ExitCode) -> CommandResult:
    data["summary"] = _summary(data)
    return CommandResult(data=data, exit_code=int(code), render=lambda console: render(console, data))


def _summary(data: dict[str, Any]) -> str:
    n, what = len(data["artifacts"]), "backed up to" if data["direction"] == "mirror" else "restored from"
    other = data.get("to") or data.get("from")
    if data["error"]:
        return f"{data['env']}: {n} artifact(s) {what} {other} before: {data['error']}"
    return f"{data['env']} release {data['release']}: {n} artifacts {what} {other} by digest, verified"


def render(console: Console, data: dict[str, Any]) -> None:
    table = Table(title=f"registry {data['direction']} of {data['env']} ({data['release'] or 'no release'})")
    for col in ("artifact", "source", "destination", "digest", "verified", "seconds"):
        table.add_column(col, overflow="fold")
    for a in data["artifacts"]:
        src, dst = (escape(a[k].split("@", 1)[0]) for k in ("source", "destination"))
        table.add_row(a["artifact"], src, dst, a["digest"], "yes", f"{a['seconds']:.2f}")
    console.print(table)
    style = "red" if data["error"] else "green"
    console.print(f"[{style}]{escape(data['summary'])}[/{style}]", soft_wrap=True)
