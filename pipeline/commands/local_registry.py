"""`registry`: the embedded OCI registry `build` pushes to (start, stop, status); `mirror` backs an
env's release up into a second registry, or restores it from there (pipeline.commands.registry_mirror).

It keeps serving after a run, so `podman pull` / `helm pull` of what was promoted work
afterwards; `python -m pipeline registry stop` stops it (its data stays under the cache dir).
It stops by itself once its data directory is gone (a deleted temporary checkout): a watchdog
process started beside it (pipeline.runtime.registry.watch) sees to that.
"""

from __future__ import annotations

import argparse

from pipeline.commands import registry_mirror
from pipeline.core.context import RunContext
from pipeline.core.exit_codes import UsageError
from pipeline.core.result import CommandResult
from pipeline.runtime import registry

NAME = "registry"
HELP = (
    "The embedded OCI registry on 127.0.0.1 (start | stop | status; it keeps serving after a run); "
    "mirror: copy an env's release to or from a second registry by digest"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["start", "stop", "status", "mirror"],
        nargs="?",
        default="status",
        help="default: %(default)s",
    )
    registry_mirror.add_arguments(parser)


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult | int:
    if args.action == "mirror":
        return registry_mirror.main(args, ctx)
    if extra := registry_mirror.given(args):
        raise UsageError(f"{', '.join(extra)} only go with `registry mirror`")
    return registry.main([args.action])
