"""The CLI's exit codes, in one place (documented in docs/pipeline.md, "Exit codes").

Scripts branch on these: a verdict (policy refused, a gate failed) is not an error (something
broke before a verdict was reached), and neither is a mistyped command line.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    # The verb did what was asked (a no-op counts: "already there", "not frozen").
    OK = 0
    # A verdict: the promotion policy refused, a gate or check failed, nothing to roll back.
    REFUSED = 1
    # The command line is wrong: unknown verb or flag, a bad value (argparse's own code).
    USAGE = 2
    # No verdict reached: an exception, a tool missing, an unreachable or broken GitOps remote.
    ERROR = 3


class UsageError(Exception):
    """Options that parse but do not go together (`promote --release` into the first env): exit 2."""


def describe() -> list[tuple[int, str, str]]:
    """(code, name, meaning) for help texts and docs."""
    meaning = {
        ExitCode.OK: "ok (including a no-op)",
        ExitCode.REFUSED: "refused by policy / a gate or check failed (a verdict)",
        ExitCode.USAGE: "usage error (bad verb, flag or value)",
        ExitCode.ERROR: "error: no verdict reached (exception, tool missing, GitOps remote unreachable)",
    }
    return [(int(c), c.name.lower(), meaning[c]) for c in ExitCode]
