"""The canary drill's step and verdict logic (pipeline/controller/canary_steps.py) with injected measurements,
on the chart's own analysis (the one source the AnalysisTemplate renders from) and on hand-built metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from pipeline.controller.canary_steps import (
    drill_timers,
    parse_steps,
    pod_split,
    run_analysis,
    seconds,
)
from pipeline.rollout import analysis as ra

REPO = Path(__file__).resolve().parents[2]
ARGS = {"namespace": "drill-staging", "canary-release": "0.2.0+canary"}


def chart_analysis() -> ra.Analysis:
    return drill_timers(ra.load(REPO, "staging"), "5s", "10s")


def by_metric(analysis: ra.Analysis, values: Mapping[str, list[float]]) -> Callable[[str], float]:
    """A measure() that answers each metric's resolved query with its next value (the last repeats)."""
    resolved = {ra.resolve_args(m.query, {**analysis.args, **ARGS}): m.name for m in analysis.metrics}
    served: dict[str, int] = {}

    def measure(query: str) -> float:
        name = resolved[query]  # a query the template does not carry fails the test here
        i = served.get(name, 0)
        served[name] = i + 1
        seq = values[name]
        return seq[min(i, len(seq) - 1)]

    return measure


def test_good_canary_succeeds_after_consecutive_successes() -> None:
    analysis = chart_analysis()
    sleeps: list[float] = []
    values = {"canary-requests": [80.0], "error-ratio": [0.0], "ttft-p95-ratio": [1.02], "itl-p95-ratio": [0.98]}
    run = run_analysis(analysis, ARGS, by_metric(analysis, values), sleep=sleeps.append)
    assert run.phase is ra.Phase.SUCCESSFUL and run.failing is None
    # consecutiveSuccessLimit 2 on the ratios: two rounds, one drill interval between them.
    assert sleeps == [5.0]
    assert run.values("error-ratio") == [0.0, 0.0]
    assert run.values("canary-requests") == [80.0]  # consecutiveSuccessLimit 1: measured once


def test_error_canary_fails_on_the_second_failed_measurement_with_its_query() -> None:
    analysis = chart_analysis()
    values = {"canary-requests": [80.0], "error-ratio": [4.0], "ttft-p95-ratio": [1.0], "itl-p95-ratio": [1.0]}
    run = run_analysis(analysis, ARGS, by_metric(analysis, values), sleep=lambda _s: None)
    assert run.phase is ra.Phase.FAILED and run.failing == "error-ratio"
    assert run.values("error-ratio") == [4.0, 4.0]  # failureLimit 1: the second failure ends the run
    assert 'release="0.2.0+canary"' in run.failing_query and "[10s]" in run.failing_query


def test_latency_canary_fails_on_ttft_ratio_after_min_requests() -> None:
    analysis = chart_analysis()
    nan = math.nan
    values = {
        "canary-requests": [10.0, 60.0],
        "error-ratio": [nan, 0.0],
        "ttft-p95-ratio": [nan, 3.1],
        "itl-p95-ratio": [nan, 1.0],
    }
    run = run_analysis(analysis, ARGS, by_metric(analysis, values), sleep=lambda _s: None)
    assert run.phase is ra.Phase.FAILED and run.failing == "ttft-p95-ratio"
    assert run.values("ttft-p95-ratio") == [None, 3.1, 3.1]  # NaN recorded as None (JSON)


def test_no_verdict_without_requests_is_inconclusive() -> None:
    analysis = chart_analysis()
    nan = math.nan
    values = {"canary-requests": [0.0], "error-ratio": [nan], "ttft-p95-ratio": [nan], "itl-p95-ratio": [nan]}
    run = run_analysis(analysis, ARGS, by_metric(analysis, values), sleep=lambda _s: None)
    assert run.phase is ra.Phase.INCONCLUSIVE
    assert len(run.values("canary-requests")) == 4  # inconclusiveLimit 3: the fourth ends it


def test_one_failure_within_the_limit_then_successes_passes() -> None:
    metric = ra.Metric(
        "m", "q", "1s", 4, success_condition="result[0] <= 2", failure_condition="result[0] > 2",
        failure_limit=1, consecutive_success_limit=2,
    )  # fmt: skip
    seq = iter([5.0, 1.0, 1.0])
    run = run_analysis(ra.Analysis((metric,), {}), {}, lambda _q: next(seq), sleep=lambda _s: None)
    assert run.phase is ra.Phase.SUCCESSFUL
    assert [m.phase for m in run.measurements] == [ra.Phase.FAILED, ra.Phase.SUCCESSFUL, ra.Phase.SUCCESSFUL]


def test_arguments_without_value_are_refused() -> None:
    with pytest.raises(ValueError, match="canary-release"):
        run_analysis(chart_analysis(), {"namespace": "x"}, lambda _q: 0.0, sleep=lambda _s: None)


def test_steps_timers_and_pod_split() -> None:
    steps = parse_steps([{"setWeight": 25}, {"analysis": {}}, {"pause": {"duration": "1m"}}, {"pause": {}}])
    assert [(s.kind, s.weight, s.pause_s) for s in steps] == [
        ("setWeight", 25, None), ("analysis", 0, None), ("pause", 0, 60.0), ("pause", 0, None),
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"rollout.steps\[0\]: setWeight 120"):
        parse_steps([{"setWeight": 120}])
    with pytest.raises(ValueError, match=r"steps\[0\]: expected"):
        parse_steps([{"experiment": {}}])
    assert seconds("500ms") == 0.5 and seconds("1m") == 60.0
    with pytest.raises(ValueError, match="not a duration"):
        drill_timers(chart_analysis(), "soon", "10s")
    # No surge: the canary's pods come out of the stable's; never more than replicas in all.
    assert [pod_split(w, 2) for w in (0, 25, 50, 100)] == [(0, 2), (1, 1), (1, 1), (2, 0)]
    assert [pod_split(w, 4) for w in (10, 25, 60)] == [(1, 3), (1, 3), (3, 1)]
