"""Typed results every stage returns; the executors and reports only ever see these."""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from rich.console import Console


class Status(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    # Could not run here (no engine, no DB, no GPU): never counted as passed.
    SKIPPED = "skipped"


class Check(BaseModel):
    """One named check inside a stage (e.g. `ruff`, `helm lint`, `policy:images`)."""

    name: str
    status: Status
    detail: str = ""
    seconds: float = 0.0
    numbers: dict[str, float] = Field(default_factory=dict)


class StageResult(BaseModel):
    """What a stage did: status, checks, numbers, evidence files, and where its logs are."""

    stage: str
    status: Status
    summary: str = ""
    checks: list[Check] = Field(default_factory=list)
    numbers: dict[str, float] = Field(default_factory=dict)
    evidence: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[str] = Field(default_factory=list)
    logs: str | None = None
    seconds: float = 0.0
    cached: bool = False
    # FAILED without a verdict: an exception, a tool missing, an unreachable remote (exit code 3,
    # not 1: a script retries an error, never a refusal). See pipeline/core/exit_codes.py.
    error: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED

    @classmethod
    def from_checks(cls, stage: str, checks: list[Check], **kw: Any) -> StageResult:
        """FAILED if any check failed; SKIPPED only if every check was skipped; else PASSED."""
        if any(c.status is Status.FAILED for c in checks):
            status = Status.FAILED
        elif checks and all(c.status is Status.SKIPPED for c in checks):
            status = Status.SKIPPED
        else:
            status = Status.PASSED
        return cls(stage=stage, status=status, checks=checks, **kw)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status is Status.FAILED]

    def skipped(self) -> list[Check]:
        return [c for c in self.checks if c.status is Status.SKIPPED]

    def write(self, run_dir: Path) -> Path:
        path = run_dir / f"{self.stage}.json"
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path


@dataclass
class CommandResult:
    """What an operational verb (pipeline/commands/) returns: its result and exit code.

    `data` is the document `-o json|yaml` prints (JSON-able); `render` draws the human view
    (`-o table`) on the console it is given (stdout). Progress goes to the run context's
    console (stderr) while the command runs, never into either.
    """

    data: Any
    exit_code: int = 0
    render: Callable[[Console], None] | None = None


class Timer:
    """`with Timer() as t: ...; t.seconds`."""

    def __enter__(self) -> Timer:
        self._t0 = time.monotonic()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = round(time.monotonic() - self._t0, 3)
