"""How a verb's result reaches the user: one document on stdout, everything else on stderr.

`-o json|yaml` print exactly one document (a StageResult's dict, or a command's `data`);
`-o table` prints the human view. While a verb runs, stdout (Python's and file descriptor 1,
so child processes too) points at stderr: nothing but the result can land on stdout, which
is what lets `python -m pipeline status -o json | jq` work whatever a stage logs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipeline.core.result import StageResult, Status

FORMATS = ("table", "json", "yaml")
DEFAULT_FORMAT = "table"
COLOUR = {Status.PASSED: "green", Status.FAILED: "red", Status.SKIPPED: "yellow"}
# A result piped to a file or another program is never wrapped (nor cut): one line stays one line.
PIPED_WIDTH = 100_000


def results_console(stream: TextIO) -> Console:
    """A console on the results stream: the terminal's width, or unbounded when piped."""
    tty = stream.isatty()
    return Console(file=stream, width=None if tty else PIPED_WIDTH, soft_wrap=False, highlight=False)


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        return None


@contextlib.contextmanager
def stdout_reserved() -> Iterator[TextIO]:
    """While inside, stdout (sys.stdout and fd 1) writes to stderr; yields a stream on the real stdout.

    Where stdout is not a file (an embedding program, pytest's capsys) only sys.stdout is moved.
    """
    sys.stdout.flush()
    out_fd, err_fd = _fileno(sys.stdout), _fileno(sys.stderr)
    if out_fd is None or err_fd is None:
        real = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            yield real
        return
    saved = os.dup(out_fd)
    real_fd = io.TextIOWrapper(os.fdopen(saved, "wb", closefd=False), encoding="utf-8", write_through=True)
    os.dup2(err_fd, out_fd)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield real_fd
    finally:
        with contextlib.suppress(OSError, ValueError):
            real_fd.flush()
            sys.stderr.flush()
        os.dup2(saved, out_fd)
        real_fd.detach()
        os.close(saved)


def plain(doc: Any) -> Any:
    """JSON-able copy of `doc` (datetimes, paths and enums as strings)."""
    return json.loads(json.dumps(doc, default=str))


def dump(doc: Any, fmt: str) -> str:
    """The document as JSON (indented) or YAML (block style, keys in order)."""
    data = plain(doc)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "yaml":
        import yaml

        # Keys in the order the verb gave them; never fold a long message.
        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=PIPED_WIDTH))
    raise ValueError(f"unknown output format {fmt!r}: choose from {', '.join(FORMATS)}")


def render_stage(console: Console, result: StageResult, *, table: bool = True) -> None:
    """Every check with its status and full detail (wrapped, never cut), then the verdict line."""
    if table and result.checks:
        checks = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        checks.add_column("check", no_wrap=True)
        checks.add_column("status", no_wrap=True)
        checks.add_column("detail", overflow="fold")
        for check in result.checks:
            status = f"[{COLOUR[check.status]}]{check.status.value.upper()}[/]"
            # Text, not markup: a detail quoting `[...]` (a Rego set, a log line) prints as written.
            checks.add_row(Text(check.name), status, Text(check.detail))
        console.print(checks)
    colour = COLOUR[result.status]
    word = "ERROR" if result.error else result.status.value.upper()
    console.print(
        f"[bold {colour}]{result.stage}: {word}[/] {escape(result.summary)} ({result.seconds:.1f}s)", soft_wrap=True
    )


def error_document(verb: str, message: str, exit_code: int) -> dict[str, Any]:
    """What `-o json|yaml` prints when a verb raised instead of returning a result."""
    return {"verb": verb, "status": "error", "error": message, "exit_code": exit_code}


def legacy_document(verb: str, exit_code: int, run_dir: Path) -> dict[str, Any]:
    """A command that returns only an exit code: that code, and its `<verb>.json` if it wrote one."""
    written = run_dir / f"{verb}.json"
    result: Any = None
    if written.is_file():
        with contextlib.suppress(ValueError):
            result = json.loads(written.read_text())
    return {"verb": verb, "exit_code": exit_code, "result": result}
