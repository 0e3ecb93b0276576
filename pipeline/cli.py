"""`python -m pipeline <verb>`: the local executor's command line.

Verbs come from an explicit, ordered registry (like pip's `commands/__init__.py`): first the
pipeline verbs in the order a change travels through them, then the operational verbs. A verb
maps to its module; running a verb imports only that module (`--help` imports them all for
their one-line HELP). A stage module (`pipeline/stages/`) defines:

    NAME = "render"                      # the verb; also the Dagger function's name
    HELP = "one line"
    def add_arguments(parser) -> None
    def run_from_args(args, ctx) -> StageResult

A command module (`pipeline/commands/`) defines NAME, HELP, add_arguments and
`main(args, ctx) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from types import ModuleType

from rich.table import Table

from pipeline.core.context import RunContext, new_run_dir
from pipeline.core.result import StageResult, Status

# The pipeline verbs, in pipeline order (`ci` runs the ones before it).
PIPELINE_VERBS: dict[str, str] = {
    "test": "pipeline.stages.test",
    "build": "pipeline.stages.build",
    "scan": "pipeline.stages.scan",
    "render": "pipeline.stages.render",
    "smoke": "pipeline.stages.smoke",
    "loadtest": "pipeline.stages.loadtest",
    "promote": "pipeline.stages.promote",
    "ci": "pipeline.stages.ci",
}
# Operating a running release: see where it stands, take it back, rehearse, size it.
OPERATIONAL_VERBS: dict[str, str] = {
    "status": "pipeline.commands.status",
    "rollback": "pipeline.stages.rollback",
    "unfreeze": "pipeline.commands.unfreeze",
    "rollback-controller": "pipeline.commands.rollback_controller",
    "drill": "pipeline.commands.drill",
    "capacity": "pipeline.commands.capacity",
    "registry": "pipeline.commands.local_registry",
}
REGISTRY: dict[str, str] = {**PIPELINE_VERBS, **OPERATIONAL_VERBS}


def discover(only: str | None = None) -> dict[str, ModuleType]:
    """Verb → module, in registry order. With `only`, import just that verb's module, so a
    command does not pay for importing every stage (locust, kubernetes, ...)."""
    if only is not None:
        return {only: importlib.import_module(REGISTRY[only])} if only in REGISTRY else {}
    return {verb: importlib.import_module(path) for verb, path in REGISTRY.items()}


def _requested_verb(argv: list[str]) -> str | None:
    """The verb on the command line (first word that is not an option or an option's value)."""
    it = iter(argv)
    for word in it:
        if word == "--run-dir":
            next(it, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(verbs: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="LLM service delivery pipeline.")
    parser.add_argument("--run-dir", type=Path, help="write results here (default: .runs/<time>-<verb>/)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(
        title="verbs",
        dest="verb",
        required=True,
        metavar="VERB",
        description=f"pipeline verbs, in order: {' '.join(PIPELINE_VERBS)}; then: {' '.join(OPERATIONAL_VERBS)}",
    )
    for name, mod in verbs.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
    return parser


COLOUR = {Status.PASSED: "green", Status.FAILED: "red", Status.SKIPPED: "yellow"}


def print_result(ctx: RunContext, result: StageResult, *, table: bool = True) -> None:
    """Every check with its status (a SKIPPED check shows its reason), then the verdict."""
    if table and result.checks:
        checks = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        checks.add_column("check")
        checks.add_column("status")
        checks.add_column("detail", overflow="fold")
        for check in result.checks:
            status = f"[{COLOUR[check.status]}]{check.status.value.upper()}[/]"
            checks.add_row(check.name, status, check.detail.splitlines()[0][:160] if check.detail else "")
        ctx.console.print(checks)
    colour = COLOUR[result.status]
    ctx.console.print(
        f"[bold {colour}]{result.stage}: {result.status.value.upper()}[/] {result.summary} ({result.seconds:.1f}s)"
    )
    ctx.console.print(f"[dim]results: {ctx.run_dir}[/dim]")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    requested = _requested_verb(argv)
    verbs = (discover(requested) if requested else {}) or discover()
    args = build_parser(verbs).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    # One line per HTTP call from the clients drowns the stage's own progress.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    mod = verbs[args.verb]
    ctx = RunContext(run_dir=args.run_dir or new_run_dir(args.verb))
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(mod, "run_from_args"):
        result: StageResult = mod.run_from_args(args, ctx)
        result.write(ctx.run_dir)
        # `ci` already printed its own stage table; the verdict line is enough.
        print_result(ctx, result, table=not getattr(mod, "PRINTS_SUMMARY", False))
        return 0 if result.ok else 1
    return int(mod.main(args, ctx))


if __name__ == "__main__":
    sys.exit(main())
