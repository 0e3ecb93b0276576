"""An instant given on the command line (ISO 8601 with a UTC offset), for options that pin a clock."""

from __future__ import annotations

import argparse
import datetime as dt


def instant_arg(text: str) -> dt.datetime:
    """argparse type: `2026-12-30T12:00:00Z` or `...+01:00`; a naive time is refused (whose clock?)."""
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {text!r}") from exc
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (write e.g. 2026-12-30T12:00:00Z)")
    return t
