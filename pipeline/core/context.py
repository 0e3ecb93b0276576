"""What every stage gets besides its own options: where to write, which executor, a console."""

from __future__ import annotations

import datetime as dt
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from pipeline.runtime.tools import REPO_ROOT


def new_run_dir(verb: str, base: Path | None = None) -> Path:
    """`.runs/<UTC timestamp>-<verb>/` under the repo (or $PIPELINE_RUNS_DIR)."""
    root = base or Path(os.environ.get("PIPELINE_RUNS_DIR", REPO_ROOT / ".runs"))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = root / f"{stamp}-{verb}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class RunContext:
    run_dir: Path
    repo_root: Path = REPO_ROOT
    # "local" (processes on this machine) or "dagger" (inside a Dagger container).
    executor: str = field(default_factory=lambda: os.environ.get("PIPELINE_EXECUTOR", "local"))
    # Progress and diagnostics: always stderr. A verb's RESULT is not printed here but returned
    # (StageResult / CommandResult) and written to stdout by the CLI (pipeline/core/output.py).
    # Logs and CI step output are not terminals: give tables room instead of rich's 80 columns.
    console: Console = field(default_factory=lambda: Console(stderr=True, width=None if sys.stderr.isatty() else 140))

    def stage_dir(self, stage: str) -> Path:
        """`<run_dir>/<stage>/`, created: where a stage writes its logs and artifacts."""
        path = self.run_dir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def progress(self, message: str) -> None:
        self.console.print(f"[dim]·[/dim] {message}")
