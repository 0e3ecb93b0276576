"""`make bench-canary`: the good canary (`drill --canary --fault none`) N times in a row; prints each run's
verdict, exposed fraction, duration and the machine's 1-minute load, then the false-abort count (issue 23's
goal: 0 of 10). A good canary that is aborted, or a run that errors, is counted; nothing here judges a time.

    python -m pipeline.commands.bench_canary [--runs N] [--env staging]

Exit code 0 when every run promoted, 1 otherwise. Each run's full JSON is kept under
`.runs/<stamp>-bench-canary/run-NN.json` with its logs beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.controller.canary_drill import CanaryConfig, CanaryReport, run_canary_drill
from pipeline.core.context import new_run_dir
from pipeline.gitops import promotion as pm
from pipeline.runtime.procs import ProcessFailed


@dataclass
class Run:
    n: int
    verdict: str  # "promoted" | "aborted" | "paused" | "error"
    exposed_fraction: float | None = None
    seconds: float | None = None
    failing: str | None = None  # the metric that aborted it, or the error
    load1: float = 0.0


def tally(runs: Sequence[Run]) -> dict[str, int]:
    """False aborts (a good canary aborted), pauses (an Inconclusive step: no verdict yet, a human's turn
    upstream — counted apart, not as an abort), errors (no verdict), promotions."""
    return {
        "runs": len(runs),
        "promoted": sum(r.verdict == "promoted" for r in runs),
        "false_aborts": sum(r.verdict == "aborted" for r in runs),
        "paused": sum(r.verdict == "paused" for r in runs),
        "errors": sum(r.verdict == "error" for r in runs),
    }


def one_run(n: int, work: Path, cfg: CanaryConfig, drill: Callable[[Path, CanaryConfig], CanaryReport]) -> Run:
    load = os.getloadavg()[0]
    try:
        report = drill(work / f"run-{n:02d}", cfg)
    except (TimeoutError, RuntimeError, ProcessFailed, ValueError) as exc:
        return Run(n, "error", failing=f"{type(exc).__name__}: {exc}", load1=round(load, 2))
    (work / f"run-{n:02d}.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    failing = (report.failing or {}).get("metric")
    return Run(n, report.verdict, report.exposed_fraction, report.seconds, failing, round(load, 2))


def main(argv: Sequence[str] | None = None, drill: Callable[[Path, CanaryConfig], CanaryReport] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-canary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="good canaries to run (default 10)")
    parser.add_argument("--env", choices=pm.ENVS, default=pm.ENVS[1], help="whose chart values (steps, analysis)")
    parser.add_argument("--work", type=Path, help="where runs write (default: a new .runs/<stamp>-bench-canary)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    work = args.work or new_run_dir("bench-canary")
    work.mkdir(parents=True, exist_ok=True)
    cfg = CanaryConfig(env=args.env, fault="none")
    runs: list[Run] = []
    print(f"bench-canary: {args.runs} good canaries (env {args.env}, drill timers); runs in {work}", flush=True)
    for n in range(1, args.runs + 1):
        run = one_run(n, work, cfg, drill or run_canary_drill)
        runs.append(run)
        print(
            f"run {n:2d}/{args.runs}: {run.verdict:8} exposed {run.exposed_fraction} seconds {run.seconds} "
            f"load1 {run.load1}" + (f" failing {run.failing}" if run.failing else ""),
            flush=True,
        )
    counts = tally(runs)
    print(
        f"false aborts: {counts['false_aborts']}/{counts['runs']} (errors {counts['errors']}, "
        f"paused {counts['paused']}, promoted {counts['promoted']})"
    )
    (work / "summary.json").write_text(json.dumps({**counts, "runs_detail": [asdict(r) for r in runs]}, indent=2))
    return 0 if counts["promoted"] == counts["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
