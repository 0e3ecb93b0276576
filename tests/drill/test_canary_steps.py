"""The canary drill's step and verdict logic (pipeline/controller/canary_steps.py) with injected measurements,
on the chart's own analysis (the one source the AnalysisTemplate renders from) and on hand-built metrics."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.controller.canary_steps import (
    drill_timers,
    parse_steps,
    pod_split,
    prometheus_measure,
    rollout_action,
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
    assert [pod_split(w, 2) for w in (0, 10, 50, 100)] == [(0, 2), (1, 1), (1, 1), (2, 0)]
    for replicas in range(1, 13):
        for weight in range(101):
            canary, stable = pod_split(weight, replicas)
            assert canary + stable == replicas and (weight == 0) <= (canary == 0), (weight, replicas)


# argoproj/argo-rollouts utils/replicaset/canary_test.go TestApproximateWeightedNewStableReplicaCounts, every
# case: (replicas, weight, maxWeight, maxSurge, expected canary, expected stable).
UPSTREAM_SPLITS = [
    (0, 0, 100, 0, 0, 0),
    (0, 50, 100, 0, 0, 0),
    (0, 100, 100, 0, 0, 0),
    (0, 0, 100, 1, 0, 0),
    (0, 50, 100, 1, 0, 0),
    (0, 100, 100, 1, 0, 0),
    (1, 0, 100, 0, 0, 1),
    (1, 1, 100, 0, 0, 1),
    (1, 49, 100, 0, 0, 1),
    (1, 50, 100, 0, 1, 0),
    (1, 99, 100, 0, 1, 0),
    (1, 100, 100, 0, 1, 0),
    (1, 0, 100, 1, 0, 1),
    (1, 1, 100, 1, 1, 1),
    (1, 49, 100, 1, 1, 1),
    (1, 50, 100, 1, 1, 1),
    (1, 99, 100, 1, 1, 1),
    (1, 100, 100, 1, 1, 0),
    (2, 0, 100, 0, 0, 2),
    (2, 1, 100, 0, 1, 1),
    (2, 50, 100, 0, 1, 1),
    (2, 99, 100, 0, 1, 1),
    (2, 100, 100, 0, 2, 0),
    (2, 0, 100, 1, 0, 2),
    (2, 1, 100, 1, 1, 2),
    (2, 50, 100, 1, 1, 1),
    (2, 99, 100, 1, 2, 1),
    (2, 100, 100, 1, 2, 0),
    (3, 10, 100, 0, 1, 2),
    (3, 25, 100, 0, 1, 2),
    (3, 33, 100, 0, 1, 2),
    (3, 34, 100, 0, 1, 2),
    (3, 49, 100, 0, 1, 2),
    (3, 50, 100, 0, 2, 1),
    (3, 10, 100, 1, 1, 3),
    (3, 25, 100, 1, 1, 3),
    (3, 33, 100, 1, 1, 2),
    (3, 34, 100, 1, 1, 2),
    (3, 49, 100, 1, 2, 2),
    (3, 50, 100, 1, 2, 2),
    (10, 0, 100, 1, 0, 10),
    (10, 1, 100, 0, 1, 9),
    (10, 14, 100, 0, 1, 9),
    (10, 15, 100, 0, 2, 8),
    (10, 16, 100, 0, 2, 8),
    (10, 99, 100, 0, 9, 1),
    (10, 100, 100, 1, 10, 0),
    (10, 0, 100, 1, 0, 10),
    (10, 1, 100, 1, 1, 10),
    (10, 18, 100, 1, 2, 9),
    (10, 19, 100, 1, 2, 9),
    (10, 20, 100, 1, 2, 8),
    (10, 23, 100, 1, 2, 8),
    (10, 24, 100, 1, 3, 8),
    (10, 25, 100, 1, 3, 8),
    (10, 99, 100, 1, 10, 1),
    (10, 100, 100, 1, 10, 0),
]


@pytest.mark.parametrize(("replicas", "weight", "max_weight", "surge", "canary", "stable"), UPSTREAM_SPLITS)
def test_pod_split_is_argo_rollouts_basic_canary_split(
    replicas: int, weight: int, max_weight: int, surge: int, canary: int, stable: int
) -> None:
    assert pod_split(weight, replicas, surge, max_weight) == (canary, stable)


def test_pod_split_refuses_what_the_rollout_validation_refuses() -> None:
    # validation.go InvalidSetWeightMessage "SetWeight needs to be between 0 and 100"; no negative counts.
    for args in ((101, 3), (-1, 3), (10, -1), (10, 3, -1)):
        with pytest.raises(ValueError, match="pod_split"):
            pod_split(*args)


def test_nearest_not_ceiling_ties_round_up() -> None:
    # 4 replicas at 60 %: 2.4 pods → 2 (50 %) is nearer than 3 (75 %); ceil would give 3.
    assert pod_split(60, 4) == (2, 2)
    # 3 replicas at 50 %: 1.5 is a tie → the ceiling, 2.
    assert pod_split(50, 3) == (2, 1)
    # One replica, no surge: 10 % gives the canary no pod (its analysis then never reaches min-requests).
    assert pod_split(10, 1) == (0, 1) and pod_split(50, 1) == (1, 0)


def test_rollout_pauses_on_an_inconclusive_run_and_aborts_on_a_failed_one() -> None:
    # rollout/analysis.go reconcileStepBasedAnalysisRun: Inconclusive → pause, Failed → abort.
    analysis = chart_analysis()
    nan = math.nan
    quiet = {"canary-requests": [0.0], "error-ratio": [nan], "ttft-p95-ratio": [nan], "itl-p95-ratio": [nan]}
    run = run_analysis(analysis, ARGS, by_metric(analysis, quiet), sleep=lambda _s: None)
    assert rollout_action(run.phase) == "pause" and run.failing == "canary-requests"
    bad = {"canary-requests": [80.0], "error-ratio": [5.0], "ttft-p95-ratio": [1.0], "itl-p95-ratio": [1.0]}
    run = run_analysis(analysis, ARGS, by_metric(analysis, bad), sleep=lambda _s: None)
    assert rollout_action(run.phase) == "abort" and run.failing == "error-ratio"
    assert rollout_action(ra.Phase.SUCCESSFUL) == "continue"
    with pytest.raises(ValueError, match="still Running"):
        rollout_action(ra.Phase.RUNNING)


def test_pause_duration_is_read_as_rollout_pause_duration_seconds() -> None:
    # pkg/apis/rollouts/v1alpha1/types.go RolloutPause.DurationSeconds: int-or-string; digits alone are seconds.
    steps = parse_steps([{"pause": {"duration": 30}}, {"pause": {"duration": "45"}}, {"pause": {"duration": "2m"}}])
    assert [s.pause_s for s in steps] == [30.0, 45.0, 120.0]
    with pytest.raises(ValueError, match=r"steps\[1\].pause.duration"):
        parse_steps([{"setWeight": 10}, {"pause": {"duration": "soon"}}])
    with pytest.raises(ValueError, match=r"steps\[0\].pause.duration"):
        parse_steps([{"pause": {"duration": True}}])


# Replies of Prometheus' /api/v1/query (docs/querying/api.md "Expression query result formats"), by query.
PROM_REPLIES: dict[str, tuple[int, Any]] = {
    "one": (
        200,
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.5"]}]}},
    ),
    "empty": (200, {"status": "success", "data": {"resultType": "vector", "result": []}}),
    "scalar": (200, {"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}}),
    "bad": (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
    "proxy": (502, "<html>bad gateway</html>"),
}


@pytest.fixture
def prom_api() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = self.path.partition("query=")[2]
            code, reply = PROM_REPLIES[query]
            payload = (reply if isinstance(reply, str) else json.dumps(reply)).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_measure_reads_result_0_as_argo_and_refuses_what_argo_cannot_index(prom_api: str) -> None:
    strict, waits = prometheus_measure(prom_api, empty_is_error=True), prometheus_measure(prom_api)
    assert strict("one") == 0.5
    # metricproviders/prometheus processResponse + EvalCondition: `result[0]` of [] or of a float64 is an Error.
    for query in ("empty", "scalar"):
        with pytest.raises(RuntimeError, match=f"result\\[0\\] of '{query}' is an Argo Rollouts measurement Error"):
            strict(query)
    assert math.isnan(waits("empty"))  # readiness waits before the first scrape
    with pytest.raises(RuntimeError, match="HTTP 400 parse error"):
        strict("bad")
    with pytest.raises(RuntimeError, match="HTTP 502 <html>bad gateway"):
        strict("proxy")
