"""End to end: Locust against the simulator with known latencies and planted faults, and the stage.

Tolerances are generous: these run on 2 shared cores next to other suites.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from test_lt_plots import assert_png

from loadtests.metrics import percentile
from loadtests.runner import LocustSpec, run_locust
from pipeline.core.context import RunContext
from pipeline.core.result import Status
from pipeline.stages.loadtest import LoadtestOptions, run

pytestmark = pytest.mark.slow

Sim = Callable[[Sequence[str]], str]
SlO = Callable[..., Path]


def spec(tmp_path: Path, host: str, slo: Path, **kw: object) -> LocustSpec:
    base: dict[str, object] = dict(
        host=host, out_dir=tmp_path / "out", users=2, duration_s=6, slo_file=slo, output_tokens="fixed:20"
    )
    base.update(kw)
    return LocustSpec(**base)  # type: ignore[arg-type]


def failed_rows(gate: dict[str, object]) -> set[str]:
    return {r["name"] for r in gate["rows"] if not r["passed"]}  # type: ignore[attr-defined]


def test_known_latencies_are_measured(tmp_path: Path, simulator: Sim, short_slo_file: SlO) -> None:
    # load-factor 0: the simulator's latency does not grow with concurrency, so the truth is exact.
    url = simulator(["--ttft-ms", "150", "--itl-ms", "25", "--load-factor", "0"])
    run = run_locust(spec(tmp_path, url, short_slo_file()))
    assert run.exit_code == 0, run.logs[0].read_text()[-3000:]
    assert run.gate is not None and run.gate["passed"]
    ok = [s for s in run.samples if s.ok]
    assert len(ok) >= 6
    ttft = percentile([s.ttft_ms for s in ok if s.ttft_ms is not None], 50)
    itl = percentile([g for s in ok for g in s.itl_ms], 50)
    e2e = percentile([s.e2e_ms for s in ok], 50)
    assert 150 * 0.95 <= ttft <= 150 * 1.3 + 30, ttft
    assert 25 * 0.85 <= itl <= 25 * 1.3 + 10, itl  # a late token shortens the next gap
    assert 150 + 19 * 25 <= e2e <= (150 + 19 * 25) * 1.3 + 50, e2e
    assert {s.output_tokens for s in ok} == {20}
    assert all(len(s.itl_ms) == 19 for s in ok)
    # The same numbers reach Locust's own report as custom request types.
    with (run.out_dir / "locust_stats.csv").open() as fh:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(fh)}
    assert {"TTFT", "ITL", "TPOT", "TOKENS", "TOKENS/S", "POST"} <= {t for t, _ in rows}
    assert 150 <= float(rows[("TTFT", "chat/stream")]["50%"]) <= 150 * 1.3 + 30
    assert {p.name for p in run.artifacts()} >= {"locust.html", "locust.json", "locust_stats.csv"}


def test_slow_simulator_fails_on_ttft(tmp_path: Path, simulator: Sim, short_slo_file: SlO) -> None:
    url = simulator(["--ttft-ms", "1300", "--itl-ms", "5", "--load-factor", "0"])
    run = run_locust(spec(tmp_path, url, short_slo_file()))
    assert run.exit_code == 1
    assert run.gate is not None
    failed = failed_rows(run.gate)
    assert {"ttft.p50", "ttft.p95", "goodput"} <= failed  # dev: p50 500, p95 1000, goodput TTFT 1000
    assert not failed & {"error_rate", "itl.p50", "itl.p95", "ttft.p99"}


def test_erroring_simulator_fails_on_error_rate_and_aborts_early(
    tmp_path: Path, simulator: Sim, short_slo_file: SlO
) -> None:
    url = simulator(["--error-rate", "0.9", "--ttft-ms", "10", "--itl-ms", "2"])
    slo = short_slo_file(duration_s=40, abort={"error_rate": 0.5, "grace_s": 2, "window_s": 2, "min_requests": 5})
    t0 = time.monotonic()
    run = run_locust(spec(tmp_path, url, slo, duration_s=40))
    elapsed = time.monotonic() - t0
    assert run.exit_code == 1
    assert run.gate is not None and run.gate["aborted"].startswith("error rate")
    assert "error_rate" in failed_rows(run.gate)
    assert elapsed < 25, f"no early abort: ran {elapsed:.0f}s of 40"


@pytest.mark.parametrize("mode", ["drop"])  # "error" events: test_lt_metrics
def test_200_with_broken_stream_is_a_failure(tmp_path: Path, simulator: Sim, short_slo_file: SlO, mode: str) -> None:
    url = simulator(["--stream-cutoff-tokens", "3", "--stream-cutoff-mode", mode, "--ttft-ms", "10", "--itl-ms", "5"])
    run = run_locust(spec(tmp_path, url, short_slo_file(duration_s=4), duration_s=4))
    assert run.gate is not None and "error_rate" in failed_rows(run.gate)
    bad = [s for s in run.samples if not s.ok]
    assert bad and all(s.status == 200 for s in bad)
    assert run.gate["summary"]["error_rate"] > 0.9


def test_distributed_master_and_worker(tmp_path: Path, simulator: Sim, short_slo_file: SlO) -> None:
    url = simulator(["--ttft-ms", "20", "--itl-ms", "5", "--load-factor", "0"])
    run = run_locust(spec(tmp_path, url, short_slo_file(), workers=1))
    assert run.gate is not None, run.logs[0].read_text()[-3000:]
    # Samples measured in the worker travelled to the master's gate.
    assert run.gate["summary"]["requests"] >= 10
    assert run.exit_code == 0


def test_stage_against_local_stack_passes_then_fails_when_planted_slow(tmp_path: Path, short_slo_file: SlO) -> None:
    slo = short_slo_file(duration_s=6, warmup_s=1)
    ctx = RunContext(run_dir=tmp_path / "pass")
    ok = run(LoadtestOptions(env="dev", slo_file=slo), ctx)
    assert ok.status is Status.PASSED, ok.summary
    assert "all SLOs met" in ok.summary and ok.numbers["rps"] > 1
    for name in ("latency_over_time", "throughput_over_time", "ttft_distribution", "itl_distribution"):
        assert f"loadtest/{name}.png" in ok.artifacts
        assert_png(ctx.run_dir / "loadtest" / f"{name}.png")
    md = (ctx.run_dir / "loadtest.md").read_text()
    assert "](loadtest/locust.html)" in md and "![ttft_distribution](loadtest/ttft_distribution.png)" in md
    assert not (ctx.run_dir / "loadtest" / "tokens.txt").exists()

    ctx = RunContext(run_dir=tmp_path / "slow")
    bad = run(LoadtestOptions(env="dev", slo_file=slo, simulator_args=("--ttft-ms", "1300")), ctx)
    assert bad.status is Status.FAILED
    assert "BREACHED: ttft.p50" in bad.summary and "ttft.p95" in bad.summary
    assert {c.name for c in bad.failures()} >= {"slo:ttft.p95"}
