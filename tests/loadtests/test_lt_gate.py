"""The gate on synthetic samples: the right threshold fails, warm-up is excluded, goodput as vLLM defines it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loadtest_helpers import make_sample

from loadtests.gate import evaluate, is_good
from loadtests.slo import SLO

T0 = 1_000_000.0


def window(n: int, every: float = 0.1, start: float = T0 + 3.0, **kw: object) -> list:  # type: ignore[type-arg]
    return [make_sample(start + i * every, **kw) for i in range(n)]  # type: ignore[arg-type]


def test_healthy_run_passes(dev_slo: SLO, tmp_path: Path) -> None:
    rep = evaluate(dev_slo, window(100), t_start=T0, t_end=T0 + 13.0)
    assert rep.passed, rep.table()
    assert rep.summary.requests == 100
    assert rep.summary.rps == pytest.approx(10.0)
    assert rep.summary.output_tokens_per_s == pytest.approx(200.0)
    assert rep.summary.goodput_ratio == 1.0
    data = json.loads(rep.write(tmp_path / "slo.json").read_text())
    assert data["passed"] is True
    assert {r["name"] for r in data["rows"]} >= {"ttft.p95", "itl.p99", "e2e.p50", "error_rate", "goodput", "rps"}


def test_slow_ttft_fails_on_ttft_only(dev_slo: SLO) -> None:
    rep = evaluate(dev_slo, window(100, ttft=1500.0), t_start=T0, t_end=T0 + 13.0)
    failed = {r.name for r in rep.failures()}
    # 1500 ms breaches p50 (500) and p95 (1000) but not p99 (2000); goodput's TTFT SLO is 1000.
    assert failed == {"ttft.p50", "ttft.p95", "goodput"}
    row = next(r for r in rep.rows if r.name == "ttft.p95")
    assert row.margin == pytest.approx(-500.0)
    assert "ttft.p95" in rep.table() and "FAIL" in rep.table()


def test_errors_fail_on_error_rate(dev_slo: SLO) -> None:
    samples = window(90) + window(10, start=T0 + 5.05, ok=False)
    rep = evaluate(dev_slo, samples, t_start=T0, t_end=T0 + 13.0)
    failed = {r.name for r in rep.failures()}
    assert "error_rate" in failed
    assert rep.summary.error_rate == pytest.approx(0.1)
    assert rep.summary.errors == {"HTTP 500": 10}


def test_warmup_is_excluded(dev_slo: SLO) -> None:
    # Terrible first seconds (cold start) must not count; warm-up is 3 s in dev.
    cold = window(20, start=T0, every=0.1, ttft=9000.0)
    rep = evaluate(dev_slo, cold + window(100), t_start=T0, t_end=T0 + 13.0)
    assert rep.passed, rep.table()
    assert rep.summary.warmup_excluded == 20
    assert rep.summary.window_s == pytest.approx(10.0)


def test_goodput_is_the_share_meeting_every_latency_slo(dev_slo: SLO) -> None:
    g = dev_slo.goodput  # ttft<=1000, tpot<=250, e2e<=8000
    good = make_sample(T0 + 4, ttft=100, itl=10)
    slow_first = make_sample(T0 + 4, ttft=1001, itl=10)
    slow_decode = make_sample(T0 + 4, ttft=100, itl=300)  # TPOT = 300 > 250
    long_total = make_sample(T0 + 4, ttft=900, itl=240, tokens=40)  # E2E = 900 + 39*240 = 10260 > 8000
    failed = make_sample(T0 + 4, ok=False)
    assert [is_good(s, g) for s in (good, slow_first, slow_decode, long_total, failed)] == [
        True,
        False,
        False,
        False,
        False,
    ]
    rep = evaluate(dev_slo, [good, good, good, slow_first, slow_decode, long_total, failed], t_start=T0, t_end=T0 + 10)
    assert rep.summary.goodput_ratio == pytest.approx(3 / 7)
    assert rep.summary.goodput_rps == pytest.approx(3 / 7)


def test_no_data_fails_and_abort_fails(dev_slo: SLO) -> None:
    rep = evaluate(dev_slo, [], t_start=T0, t_end=T0 + 10)
    assert not rep.passed
    assert all(r.detail == "no data" for r in rep.rows if r.name.startswith("ttft"))
    rep = evaluate(dev_slo, window(100), t_start=T0, t_end=T0 + 13, aborted="error rate exploded")
    assert not rep.passed and rep.failures()[-1].name == "aborted"
    # JSON has no NaN: no-data values are null.
    assert json.loads(json.dumps(rep.to_dict()))["rows"][-1]["value"] is None


def test_capacity_mode_skips_service_wide_throughput(dev_slo: SLO) -> None:
    slow_trickle = window(3, every=3.0)
    rep = evaluate(dev_slo, slow_trickle, t_start=T0, t_end=T0 + 13, include_throughput=False)
    assert "rps" not in {r.name for r in rep.rows}
