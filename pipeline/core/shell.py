"""Run one external command as one named Check, with its output kept in a log file."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.core.result import Check, Status, Timer

log = logging.getLogger(__name__)


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_command(
    name: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> tuple[Check, str]:
    """Run argv; PASSED on exit 0, FAILED otherwise (detail = output tail). Returns (check, output)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name.replace(' ', '-').replace('/', '-')}.log"
    log.debug("%s: %s", name, " ".join(argv))
    with Timer() as t:
        try:
            proc = subprocess.run(
                list(argv),
                cwd=cwd,
                env={**os.environ, **(env or {})},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            output = (proc.stdout or "") + (proc.stderr or "")
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired as exc:
            output = f"{exc}\n"
            code = None
        except OSError as exc:
            output = f"cannot run {argv[0]}: {exc}\n"
            code = None
    log_path.write_text(f"$ {' '.join(argv)}\n{output}")
    if code == 0:
        return Check(name=name, status=Status.PASSED, detail=f"log: {log_path.name}", seconds=t.seconds), output
    why = "timed out" if code is None and "timed out" in output else f"exit {code}"
    return (
        Check(name=name, status=Status.FAILED, detail=f"{why}; {tail(output)}", seconds=t.seconds),
        output,
    )


def run_capture(
    argv: list[str], cwd: Path, timeout: float = 120, merge: bool = False
) -> subprocess.CompletedProcess[str]:
    if merge:  # one stream keeps promtool's per-file headers next to their failures
        return subprocess.run(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
        )
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
