"""`python -m pipeline <verb>`: the local executor's command line.

Verbs are discovered from modules in `pipeline/stages/` (stages: return a StageResult)
and `pipeline/commands/` (other operator commands). A stage module defines:

    NAME = "render"                      # the verb; also the Dagger function's name
    HELP = "one line"
    def add_arguments(parser) -> None
    def run_from_args(args, ctx) -> StageResult

A command module defines NAME, HELP, add_arguments and `main(args, ctx) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

from rich.table import Table

from pipeline.core.context import RunContext, new_run_dir
from pipeline.core.result import StageResult, Status

PACKAGES = ("pipeline.stages", "pipeline.commands")


def discover(only: str | None = None) -> dict[str, ModuleType]:
    """Verb → module. With `only`, import just that verb's module (module name = verb with
    `-` → `_`), so a command does not pay for importing every stage (locust, kubernetes, ...)."""
    verbs: dict[str, ModuleType] = {}
    for pkg_name in PACKAGES:
        try:
            pkg = importlib.import_module(pkg_name)
        except ModuleNotFoundError:
            continue
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
            if info.name.startswith("_") or (only is not None and info.name != only.replace("-", "_")):
                continue
            mod = importlib.import_module(f"{pkg_name}.{info.name}")
            name = getattr(mod, "NAME", None)
            if isinstance(name, str):
                verbs[name] = mod
    return verbs


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
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
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
