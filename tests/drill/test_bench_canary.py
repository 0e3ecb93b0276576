"""`make bench-canary`'s counting (pipeline/commands/bench_canary.py) with the drill injected: an aborted good
canary is a false abort, a drill that raises is an error, and only all-promoted exits 0. The drill itself is
covered end to end by tests/drill/test_canary_drill.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.commands import bench_canary
from pipeline.controller.canary_drill import CanaryConfig, CanaryReport


def scripted(outcomes: list[str]) -> tuple[list[CanaryConfig], Callable[[Path, CanaryConfig], CanaryReport]]:
    """A drill that returns (or raises) the given outcomes in turn and records the configs it was given."""
    seen: list[CanaryConfig] = []
    it: Iterator[str] = iter(outcomes)

    def drill(work: Path, cfg: CanaryConfig) -> CanaryReport:
        seen.append(cfg)
        outcome = next(it)
        if outcome == "timeout":
            raise TimeoutError("canary drill: over 240s")
        failing = {"metric": "ttft-p95-ratio"} if outcome == "aborted" else None
        return CanaryReport(verdict=outcome, fault=cfg.fault, exposed_fraction=0.1, seconds=60.0, failing=failing)

    return seen, drill


def test_counts_false_aborts_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seen, drill = scripted(["promoted", "aborted", "timeout", "promoted", "paused"])
    code = bench_canary.main(["--runs", "5", "--work", str(tmp_path)], drill=drill)
    out = capsys.readouterr().out
    assert code == 1
    assert [c.fault for c in seen] == ["none"] * 5 and {c.env for c in seen} == {"staging"}
    # A paused canary (Inconclusive analysis) is neither promoted nor a false abort.
    assert "false aborts: 1/5 (errors 1, paused 1, promoted 2)" in out
    assert "run  2/5: aborted" in out and "failing ttft-p95-ratio" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["false_aborts"], summary["errors"], summary["paused"], summary["promoted"]) == (1, 1, 1, 2)
    assert summary["runs_detail"][2]["failing"].startswith("TimeoutError")
    assert sorted(p.name for p in tmp_path.glob("run-*.json")) == [
        "run-01.json",
        "run-02.json",
        "run-04.json",
        "run-05.json",
    ]


def test_all_promoted_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, drill = scripted(["promoted", "promoted"])
    assert bench_canary.main(["--runs", "2", "--work", str(tmp_path)], drill=drill) == 0
    assert "false aborts: 0/2" in capsys.readouterr().out


def test_refuses_zero_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_canary.main(["--runs", "0", "--work", str(tmp_path)])
    assert exc.value.code == 2 and "--runs must be at least 1, got 0" in capsys.readouterr().err
