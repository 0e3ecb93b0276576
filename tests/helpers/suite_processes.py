"""Processes the test suite started, found by a mark in their environment, and stopped if they
outlive it (tests/conftest.py). Every process a test starts inherits the mark — detached ones too
(a registry, a daemonised redis), which a parent-child walk would miss; a test's `clean_env()`
keeps it (it drops only GATEWAY_/PIPELINE_/VIRTUAL_ENV variables). Linux /proc only."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

MARK_VAR = "SUITE_PROCESS_MARK"
PROC = Path("/proc")


def marked(mark: str, exclude: frozenset[int] = frozenset()) -> dict[int, str]:
    """pid -> command line of each live process whose environment has MARK_VAR=mark."""
    needle = f"{MARK_VAR}={mark}".encode()
    found: dict[int, str] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            # A zombie's environ reads empty: it is gone already, only not reaped yet.
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # exited meanwhile, or not ours to read
            continue
        found[int(entry.name)] = cmdline
    return found


def stop_leftovers(mark: str, exclude: frozenset[int] = frozenset(), wait: float = 10.0) -> list[str]:
    """Give the marked processes `wait` seconds to exit (a watchdog's poll, a server's shutdown), then
    SIGTERM and, 5 s later, SIGKILL the rest. Returns `pid: command` of each one that had to be stopped."""
    deadline = time.monotonic() + wait
    left = marked(mark, exclude)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked(mark, exclude)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and marked(mark, exclude).keys() & left.keys():
        time.sleep(0.1)
    for pid in marked(mark, exclude).keys() & left.keys():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return [f"{pid}: {cmd}" for pid, cmd in sorted(left.items())]
