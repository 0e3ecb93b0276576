"""The canary drill's step logic: walk the chart's canary steps and judge each `analysis` step the way an
Argo Rollouts AnalysisRun does, with the metrics of pipeline/rollout/analysis.py (the one source the
AnalysisTemplate renders from).

Run semantics mirrored from argoproj/argo-rollouts analysis/analysis.go: every metric is measured each
`interval` until its phase is terminal (metric_phase: count, failureLimit, consecutiveSuccessLimit,
inconclusiveLimit); a Failed or Inconclusive metric terminates the run at once (isTerminating), Failed
being the worse; the run is Successful when every metric is. What the rollout does with the run is
argoproj/argo-rollouts rollout/analysis.go `reconcileStepBasedAnalysisRun`: Failed (or Error) → AddAbort;
Inconclusive → AddPauseCondition(InconclusiveAnalysis): the rollout pauses at its current weight, neither
promoted nor aborted, until a human resumes or aborts it (`rollout_action`).
A NaN result (the chart's queries end in `or on() vector(NaN)` below min-requests) is neither met nor failed by
every condition but `!=`: inconclusive. A result `result[0]` cannot index (an empty vector; a scalar, which
Argo hands the condition as a float64) is an expr error upstream, a measurement Error (utils/evaluate/
evaluate.go EvalCondition, metricproviders/prometheus/prometheus.go processResponse): `prometheus_measure`
raises on it (an empty vector only with `empty_is_error`, the analysis' reader), and on a matrix, which no
instant query of the chart's returns.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from pipeline.rollout.analysis import Analysis, Metric, Phase, measurement_phase, metric_phase, resolve_args

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def seconds(text: str) -> float:
    """A Go-style duration as the chart writes them (`30s`, `1m`, `500ms`) in seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"not a duration (e.g. 30s, 1m): {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]


def drill_timers(analysis: Analysis, interval: str, window: str) -> Analysis:
    """The same queries and conditions with drill timers: every metric's `interval` and the `window`
    argument shortened; counts, limits and the minimum request count stay as the template carries them."""
    seconds(interval), seconds(window)  # refuse bad timers before any pod starts
    metrics = tuple(replace(m, interval=interval) for m in analysis.metrics)
    return Analysis(metrics, {**analysis.args, "window": window})


@dataclass(frozen=True)
class Step:
    kind: str  # "setWeight" | "analysis" | "pause"
    weight: int = 0
    pause_s: float | None = None  # None: `pause: {}` (until promoted by hand)


def parse_steps(steps: Sequence[Mapping[str, Any]]) -> list[Step]:
    """The chart's `rollout.steps`; anything else names the step."""
    out: list[Step] = []
    for i, s in enumerate(steps):
        if "setWeight" in s:
            w = int(s["setWeight"])
            if not 0 <= w <= 100:
                raise ValueError(f"rollout.steps[{i}]: setWeight {w} outside 0..100")
            out.append(Step("setWeight", weight=w))
        elif "analysis" in s:
            out.append(Step("analysis"))
        elif "pause" in s:
            dur = (s.get("pause") or {}).get("duration")
            out.append(Step("pause", pause_s=None if dur is None else pause_seconds(dur, i)))
        else:
            raise ValueError(f"rollout.steps[{i}]: expected setWeight, analysis or pause, got {dict(s)}")
    return out


def pause_seconds(duration: Any, index: int) -> float:
    """`pause.duration` (int-or-string) as RolloutPause.DurationSeconds (pkg/apis/rollouts/v1alpha1/types.go)
    reads it: an integer, or a string of digits, is seconds; any other string a Go duration."""
    if isinstance(duration, int) and not isinstance(duration, bool):
        return float(duration)
    if isinstance(duration, str) and duration.strip().isdigit():
        return float(duration.strip())
    if isinstance(duration, str):
        try:
            return seconds(duration)
        except ValueError as exc:
            raise ValueError(f"rollout.steps[{index}].pause.duration: {exc}") from exc
    raise ValueError(
        f"rollout.steps[{index}].pause.duration: an integer (seconds) or a duration string, not {duration!r}"
    )


def pod_split(weight: int, replicas: int, max_surge: int = 0, max_weight: int = 100) -> tuple[int, int]:
    """(canary, stable) model pods at `weight` by replica ratio, as Argo Rollouts splits a basic canary:
    argoproj/argo-rollouts utils/replicaset/canary.go `approximateWeightedCanaryStableReplicaCounts` (called by
    `CalculateReplicaCountsForBasicCanary`). The canary count nearest to weight x replicas / max_weight, from
    the floor and the ceiling of it (a tie, e.g. 1.5, takes the ceiling); the ceiling only while it leaves the
    stable a pod, the floor only when it is not zero — unless the weight is 0 or max_weight, or one replica
    without surge — and, with surge, the same options over replicas + 1. The first option wins equal deltas.
    """
    if max_weight <= 0 or not 0 <= weight <= max_weight or replicas < 0 or max_surge < 0:
        # validation.go InvalidSetWeightMessage; replicas and maxSurge are never negative there.
        raise ValueError(f"pod_split: weight {weight} outside 0..{max_weight}, or negative replicas/surge")
    if replicas == 0:
        return 0, 0
    exact = replicas * weight / max_weight
    ceil, floor = math.ceil(exact), math.floor(exact)
    zero_allowed = weight in (0, max_weight) or (replicas == 1 and max_surge == 0)
    options: list[tuple[int, int]] = []  # (canary, total)
    if ceil < replicas or zero_allowed:
        options.append((ceil, replicas))
    if not _tied(weight, max_weight, replicas) and (floor != 0 or zero_allowed):
        options.append((floor, replicas))
    if max_surge > 0:
        options.append((ceil, replicas + 1))
        if not _tied(weight, max_weight, replicas + 1) and (floor != 0 or zero_allowed):
            options.append((floor, replicas + 1))
    if not options:  # upstream: "should not get here"
        return 0, replicas
    best = options[0]
    for option in options[1:]:
        if _delta(weight, max_weight, *option) < _delta(weight, max_weight, *best):
            best = option
    return best[0], best[1] - best[0]


def _tied(weight: int, max_weight: int, total: int) -> bool:
    """floorCeilingTied: floor and ceiling equally far from the weight (same float arithmetic as upstream)."""
    return math.modf(float(total) * (weight / max_weight))[0] == 0.5


def _delta(weight: int, max_weight: int, canary: int, total: int) -> float:
    """weightDelta: how far canary/total pods is from the weight."""
    return abs(canary * max_weight / total - weight)


@dataclass
class Measured:
    metric: str
    value: float | None  # None: NaN (JSON has no NaN)
    phase: Phase
    at: float  # seconds since the run started


@dataclass
class RunResult:
    phase: Phase
    failing: str | None = None  # the metric that ended the run (Failed or Inconclusive)
    failing_query: str = ""
    measurements: list[Measured] = field(default_factory=list)

    def values(self, metric: str) -> list[float | None]:
        return [m.value for m in self.measurements if m.metric == metric]


def run_analysis(
    analysis: Analysis,
    args: Mapping[str, str],
    measure: Callable[[str], float],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RunResult:
    """One AnalysisRun: measure each metric every `interval` until the run is decided (bounded by count)."""
    full = {**analysis.args, **args}
    missing = [k for k, v in full.items() if v is None]
    if missing:
        raise ValueError(f"analysis arguments without a value: {missing}")
    resolved: dict[str, str | None] = dict(full)
    queries = {m.name: resolve_args(m.query, resolved) for m in analysis.metrics}
    phases: dict[str, list[Phase]] = {m.name: [] for m in analysis.metrics}
    status: dict[str, Phase] = {m.name: Phase.RUNNING for m in analysis.metrics}
    result = RunResult(Phase.RUNNING)
    start = clock()
    interval = min(seconds(m.interval) for m in analysis.metrics)
    rounds = max(m.count for m in analysis.metrics)
    for _ in range(rounds):
        for metric in analysis.metrics:
            if status[metric.name] is not Phase.RUNNING:
                continue
            value = measure(queries[metric.name])
            phase = measurement_phase(metric, value, resolved)
            phases[metric.name].append(phase)
            kept = None if math.isnan(value) else value
            result.measurements.append(Measured(metric.name, kept, phase, round(clock() - start, 3)))
            status[metric.name] = metric_phase(metric, phases[metric.name])
        worst = _worst(status, analysis.metrics)
        if worst is not None:
            result.phase, result.failing = status[worst], worst
            result.failing_query = queries[worst]
            return result
        if all(p is Phase.SUCCESSFUL for p in status.values()):
            result.phase = Phase.SUCCESSFUL
            return result
        sleep(interval)
    # Upstream a metric reaching `count` is always terminal; only a bad template ends here.
    result.phase = Phase.INCONCLUSIVE
    result.failing = next(n for n, p in status.items() if p is Phase.RUNNING)
    result.failing_query = queries[result.failing]
    return result


def _worst(status: Mapping[str, Phase], metrics: Sequence[Metric]) -> str | None:
    for bad in (Phase.FAILED, Phase.INCONCLUSIVE):
        for m in metrics:
            if status[m.name] is bad:
                return m.name
    return None


def rollout_action(phase: Phase) -> str:
    """What the Rollout does with a step's finished AnalysisRun (rollout/analysis.go
    `reconcileStepBasedAnalysisRun`): "abort" (Failed; upstream's Error too, which the drill raises instead),
    "pause" (Inconclusive), "continue" (Successful)."""
    if phase is Phase.FAILED:
        return "abort"
    if phase is Phase.INCONCLUSIVE:
        return "pause"
    if phase is Phase.SUCCESSFUL:
        return "continue"
    raise ValueError(f"analysis run still {phase}: no rollout action yet")


def prometheus_measure(prom_url: str, timeout: float = 5.0, *, empty_is_error: bool = False) -> Callable[[str], float]:
    """result[0] of an instant query against Prometheus' HTTP API (/api/v1/query), as Argo's provider reads it:
    a vector's first sample. A scalar (Argo hands the condition a float64) or a matrix raises, naming the query.
    An empty vector is an Argo measurement Error too (`result[0]` out of range): with `empty_is_error` (what
    an analysis should use) it raises; without, it is NaN (for readiness waits before the first scrape)."""

    def measure(query: str) -> float:
        r = httpx.get(f"{prom_url}/api/v1/query", params={"query": query}, timeout=timeout)
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            why = body.get("error") if isinstance(body, dict) else None
            raise RuntimeError(f"prometheus refused {query!r}: HTTP {r.status_code} {why or r.text[:200]}")
        data = body["data"]
        if data["resultType"] == "vector" and not data["result"] and not empty_is_error:
            return math.nan
        if data["resultType"] != "vector" or not data["result"]:
            raise RuntimeError(
                f"result[0] of {query!r} is an Argo Rollouts measurement Error: the query returned "
                f"{data['resultType']} {json.dumps(data['result'])[:200]}, not a vector with a sample"
            )
        return float(data["result"][0]["value"][1])

    return measure
