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
`main(args, ctx) -> CommandResult | int` (a CommandResult carries the `-o json|yaml` document).
Optionally `read_only(args) -> bool`: such a run gets a temporary run directory, removed after.

Output contract (kubectl/helm style): the result on stdout (`-o table|json|yaml`, a global
option accepted before or after the verb), progress and logs on stderr, exit codes from
pipeline/core/exit_codes.py.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import logging
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.markup import escape

from pipeline.core import output
from pipeline.core.context import RunContext, new_run_dir
from pipeline.core.exit_codes import ExitCode, UsageError, describe
from pipeline.core.platform import PlatformError
from pipeline.core.result import CommandResult, StageResult

log = logging.getLogger(__name__)
DIST_NAME = "llm-delivery"
# Options of the top-level parser that take a value (the verb is the first word that is neither).
VALUE_OPTIONS = ("--run-dir", "-o", "--output")
# One metavar per recurring flag, whichever verb declares it (a verb's own metavar wins).
METAVARS = {
    "--gitops-repo": "URL",
    "--notify-url": "URL",
    "--target": "URL",
    "--gateway-url": "URL",
    "--actor": "NAME",
    "--token-file": "FILE",
    "--slo-file": "FILE",
    "--audit-file": "FILE",
    "--out": "DIR",
    "--root": "DIR",
    "--work-dir": "DIR",
    "--render-dir": "DIR",
    "--charts-dir": "DIR",
    "--model": "NAME",
    "--timeout": "SECONDS",
    "--duration": "SECONDS",
}

# The pipeline verbs, in pipeline order (`ci` runs the ones before it).
PIPELINE_VERBS: dict[str, str] = {
    "test": "pipeline.stages.test",
    "build": "pipeline.stages.build",
    "scan": "pipeline.stages.scan",
    "render": "pipeline.stages.render",
    "smoke": "pipeline.stages.smoke",
    "eval": "pipeline.stages.eval",
    "loadtest": "pipeline.stages.loadtest",
    "promote": "pipeline.stages.promote",
    "ci": "pipeline.stages.ci",
}
# Operating a running release: see where it stands, take it back, rehearse, size it.
OPERATIONAL_VERBS: dict[str, str] = {
    "init": "pipeline.commands.init",
    "status": "pipeline.commands.status",
    "history": "pipeline.commands.history",
    "rollback": "pipeline.stages.rollback",
    "freeze": "pipeline.commands.freeze",
    "unfreeze": "pipeline.commands.unfreeze",
    "rollback-controller": "pipeline.commands.rollback_controller",
    "drill": "pipeline.commands.drill",
    "capacity": "pipeline.commands.capacity",
    "registry": "pipeline.commands.local_registry",
    "bootstrap": "pipeline.commands.bootstrap",
    "model": "pipeline.commands.model",
}
REGISTRY: dict[str, str] = {**PIPELINE_VERBS, **OPERATIONAL_VERBS}


def discover(only: str | None = None) -> dict[str, ModuleType]:
    """Verb → module, in registry order. With `only`, import just that verb's module, so a
    command does not pay for importing every stage (locust, kubernetes, ...)."""
    if only is not None:
        return {only: importlib.import_module(REGISTRY[only])} if only in REGISTRY else {}
    return {verb: importlib.import_module(path) for verb, path in REGISTRY.items()}


def version() -> str:
    """The installed distribution's version; from pyproject.toml when running from a checkout."""
    try:
        return importlib.metadata.version(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"]) + " (not installed)"
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def _requested_verb(argv: list[str]) -> str | None:
    """The verb on the command line (first word that is not an option or an option's value)."""
    it = iter(argv)
    for word in it:
        if word in VALUE_OPTIONS:
            next(it, None)
        elif not word.startswith("-"):
            return word
    return None


def _prog() -> str:
    return DIST_NAME if Path(sys.argv[0]).name == DIST_NAME else "python -m pipeline"


def _output_option(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=output.FORMATS,
        # On a verb: SUPPRESS, so `-o` before the verb is not reset by the verb's parser.
        default=default if default is not None else argparse.SUPPRESS,
        metavar="{" + ",".join(output.FORMATS) + "}",
        help="result format on stdout: table (human view, default), json or yaml (one document)",
    )


def build_parser(verbs: dict[str, ModuleType]) -> argparse.ArgumentParser:
    codes = "; ".join(f"{code} {meaning}" for code, _, meaning in describe())
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="LLM service delivery pipeline. Results on stdout, progress and logs on stderr.",
        epilog=f"exit codes: {codes} (docs/pipeline.md)",
    )
    parser.add_argument(
        "--run-dir", type=Path, metavar="DIR", help="write results here (default: .runs/<time>-<verb>/)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}", help="print the version")
    _output_option(parser, output.DEFAULT_FORMAT)
    sub = parser.add_subparsers(
        title="verbs",
        dest="verb",
        required=True,
        metavar="VERB",
        description=f"pipeline verbs, in order: {' '.join(PIPELINE_VERBS)}; then: {' '.join(OPERATIONAL_VERBS)}",
    )
    for name, mod in verbs.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, epilog=f"exit codes: {codes}")
        mod.add_arguments(p)
        _output_option(p, None)
        for action in p._actions:
            known = next((METAVARS[o] for o in action.option_strings if o in METAVARS), None)
            if known and action.metavar is None and action.choices is None and action.nargs != 0:
                action.metavar = known
    return parser


def print_result(console: Any, result: StageResult, *, table: bool = True) -> None:
    """The human view of a stage result: every check (full detail, wrapped), then the verdict."""
    output.render_stage(console, result, table=table)


def exit_code_of(result: StageResult) -> ExitCode:
    if result.ok:
        return ExitCode.OK
    return ExitCode.ERROR if result.error else ExitCode.REFUSED


def _is_read_only(mod: ModuleType, args: argparse.Namespace) -> bool:
    check = getattr(mod, "read_only", None)
    return bool(check(args)) if callable(check) else False


@contextlib.contextmanager
def _run_dir(args: argparse.Namespace, read_only: bool) -> Iterator[tuple[Path, bool]]:
    """(run dir, kept?): --run-dir as given; a read-only verb's is temporary (outside the tree), removed after."""
    if args.run_dir is not None:
        args.run_dir.mkdir(parents=True, exist_ok=True)
        yield args.run_dir, True
    elif read_only:
        with tempfile.TemporaryDirectory(prefix=f"pipeline-{args.verb}-") as tmp:
            yield Path(tmp), False
    else:
        yield new_run_dir(args.verb), True


def _run_verb(mod: ModuleType, args: argparse.Namespace, ctx: RunContext) -> tuple[int, Any, Any]:
    """Run the verb: (exit code, the -o json|yaml document, a renderer of the table view or None)."""
    if hasattr(mod, "run_from_args"):
        result: StageResult = mod.run_from_args(args, ctx)
        result.write(ctx.run_dir)
        # `ci` already printed its own stage table (stderr); the verdict line is enough.
        table = not getattr(mod, "PRINTS_SUMMARY", False)
        code = int(exit_code_of(result))
        return code, result.model_dump(mode="json"), lambda c: print_result(c, result, table=table)
    out = mod.main(args, ctx)
    if isinstance(out, CommandResult):
        return out.exit_code, out.data, out.render
    code = int(out)
    return code, output.legacy_document(args.verb, code, ctx.run_dir), None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    requested = _requested_verb(argv)
    try:
        verbs = (discover(requested) if requested else {}) or discover()
    except PlatformError as exc:
        # Verbs read env names, namespaces and registries from platform.yaml when they load.
        sys.stderr.write(
            f"python -m pipeline: {exc}\n  fix the file (python -m pipeline init --check names the fields), "
        )
        sys.stderr.write("or restore the example with `git checkout platform.yaml`\n")
        return int(ExitCode.USAGE)
    parser = build_parser(verbs)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per HTTP call from the clients drowns the stage's own progress.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    mod = verbs[args.verb]
    fmt: str = args.output
    with output.stdout_reserved() as stdout, _run_dir(args, _is_read_only(mod, args)) as (run_dir, kept):
        ctx = RunContext(run_dir=run_dir)
        try:
            code, doc, render = _run_verb(mod, args, ctx)
        except UsageError as exc:
            # Options that parse but do not go together: argparse's format and code, nothing on stdout.
            sys.stderr.write(f"{parser.prog} {args.verb}: error: {exc}\n")
            return int(ExitCode.USAGE)
        except Exception as exc:
            log.debug("%s raised", args.verb, exc_info=True)
            message = f"{type(exc).__name__}: {exc}"
            hint = "" if args.verbose else " (-v for the traceback)"
            ctx.console.print(f"[bold red]error:[/] {args.verb}: {escape(message)}{hint}", soft_wrap=True)
            code, doc, render = (
                int(ExitCode.ERROR),
                output.error_document(args.verb, message, int(ExitCode.ERROR)),
                None,
            )
        if fmt == "table":
            if render is not None:
                render(output.results_console(stdout))
        else:
            stdout.write(output.dump(doc, fmt))
        if code != ExitCode.OK and isinstance(doc, dict) and doc.get("summary"):
            # The verdict on stderr too: a script that captures stdout still logs why it stopped.
            word = "ERROR" if code == ExitCode.ERROR else "FAILED"
            ctx.console.print(f"[red]{args.verb}: {word}[/] {escape(str(doc['summary']))}", soft_wrap=True)
        if kept:
            ctx.console.print(f"[dim]results: {run_dir}[/dim]")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
