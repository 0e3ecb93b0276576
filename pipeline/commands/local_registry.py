"""`registry`: the embedded OCI registry `build` pushes to (start, stop, status).

It keeps serving after a run, so `podman pull` / `helm pull` of what was promoted work
afterwards; `python -m pipeline registry stop` stops it (its data stays under the cache dir).
It stops by itself once its data directory is gone (a deleted temporary checkout): a watchdog
process started beside it (pipeline.runtime.registry.watch) sees to that.
"""

from __future__ import annotations

import argparse

from pipeline.core.context import RunContext
from pipeline.runtime import registry

NAME = "registry"
HELP = "The embedded OCI registry on 127.0.0.1 (start | stop | status); it keeps serving after a run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", choices=["start", "stop", "status"], nargs="?", default="status", help="default: %(default)s"
    )


def main(args: argparse.Namespace, ctx: RunContext) -> int:
    return registry.main([args.action])
