"""`model`: the model as a release artifact. `model build` trains (or reuses) the stand-in.

A verb with subcommands, one module each concern; add a subcommand by registering it in
SUBCOMMANDS below (its `add_arguments(parser)` and `run(args, ctx) -> CommandResult`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from pipeline.core import output
from pipeline.core.context import RunContext
from pipeline.core.exit_codes import UsageError
from pipeline.core.result import CommandResult
from pipeline.models import standin
from pipeline.models.record import load_record

NAME = "model"
HELP = "The model artifact: `model build` trains or reuses the stand-in model and prints its content digest"


def _build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="copy the model directory here (default: print the cache path)"
    )
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="the same recipe with 0 training steps (the planted 'wrong revision' regression)",
    )


def _build(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    record = load_record(ctx.repo_root)
    make = standin.untrained_dir if args.untrained else standin.ensure_model_dir
    try:
        model = make(record, args.out, ctx.progress)
    except standin.OutNotAModelDir as exc:
        raise UsageError(f"--out: {exc}") from exc
    data = {"recipe": record.stand_in.recipe, "untrained": bool(args.untrained), **model.as_dict()}

    def render(console: Console) -> None:
        trained = f"trained in {model.build.get('train_seconds')}s"
        how = f"reused (was {trained})" if model.reused else trained
        console.print(
            f"{model.content_digest}  {escape(str(model.path))}  "
            f"{model.size_bytes / 1024:.0f} KiB  {model.seconds:.1f}s  {how}",
            soft_wrap=True,
        )

    return CommandResult(data=data, render=render)


@dataclass(frozen=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, RunContext], CommandResult]


# `model push` (the OCI artifact) goes here, beside `build`.
SUBCOMMANDS: dict[str, Subcommand] = {
    "build": Subcommand(
        "Train the stand-in model for app/model.yaml's standIn recipe (cached) and print its content digest",
        _build_arguments,
        _build,
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(
        dest="model_command", required=True, metavar="SUBCOMMAND", help=f"one of: {', '.join(SUBCOMMANDS)}"
    )
    for name, cmd in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        # `-o` after the subcommand too (SUPPRESS keeps a `-o` given before the verb).
        p.add_argument("-o", "--output", choices=output.FORMATS, default=argparse.SUPPRESS, help="result format")


def read_only(args: argparse.Namespace) -> bool:
    # `build` writes the cache and --out, nothing into a run directory: do not leave an empty one.
    return bool(args.model_command == "build")


def main(args: argparse.Namespace, ctx: RunContext) -> CommandResult:
    return SUBCOMMANDS[args.model_command].run(args, ctx)
