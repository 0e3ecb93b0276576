"""The canary analysis from its one source, evaluated the way Argo Rollouts evaluates it.

The chart's `rollout.analysis` values render the AnalysisTemplate (charts/llm-service/templates/
analysistemplate-llm.yaml); the canary drill loads the same metrics here, so both judge a canary by the same
queries and conditions. Upstream behaviour mirrored (argoproj/argo-rollouts, checked at v1.8.0 and master):

- `resolve_args`: utils/template/template.go ResolveArgs / ResolveQuotedArgs — fasttemplate over `{{` `}}`,
  the tag trimmed, looked up as `args.<name>`; an unknown tag or an argument without a value is an error.
- `measurement_phase`: utils/evaluate/evaluate.go EvaluateResult — success and failure conditions; only a
  success condition: not met = Failed; only a failure condition: not met = Successful; both and neither
  true = Inconclusive (so a NaN result, for which every comparison but `!=` is false, is inconclusive).
- `metric_phase`: analysis/analysis.go assessMetricStatus and assessMetricFailureInconclusiveOrError.

Conditions are limited to `result[0] <op> number` (op one of < <= > >= == !=): Argo Rollouts accepts any
expr-lang expression, which the drill could not evaluate identically; render refuses anything else.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

CHART_VALUES = Path("charts/llm-service/values.yaml")
ENV_VALUES = "environments/{env}/values.yaml"

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CONDITION = re.compile(rf"^\s*result\[0\]\s*(<=|>=|==|!=|<|>)\s*({_NUMBER})\s*$")
_TAG = re.compile(r"\{\{(.*?)\}\}", re.S)


class AnalysisError(ValueError):
    """A metric definition that cannot be used; the message names the metric and what is wrong."""


class Phase(StrEnum):
    """AnalysisPhase values of Argo Rollouts (pkg/apis/rollouts/v1alpha1/analysis_types.go)."""

    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class Condition:
    """`result[0] <op> threshold`."""

    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"result[0] {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Metric:
    """One metric of the AnalysisTemplate, as the values (or the rendered template) define it."""

    name: str
    query: str
    interval: str
    count: int
    success_condition: str = ""
    failure_condition: str = ""
    failure_limit: int = 0
    consecutive_success_limit: int = 0
    inconclusive_limit: int = 0

    @classmethod
    def from_mapping(cls, item: Mapping[str, Any]) -> Metric:
        """A metric from values (`successCondition`, ...) or from a rendered template (plus `provider`)."""
        name = str(item.get("name") or "")
        if not name:
            raise AnalysisError(f"a metric has no name: {json.dumps(dict(item), default=str)[:200]}")
        query = item.get("query") or ((item.get("provider") or {}).get("prometheus") or {}).get("query")
        if not query:
            raise AnalysisError(f"metric {name}: no query")
        try:
            return cls(
                name=name,
                query=str(query),
                interval=str(item.get("interval") or ""),
                count=int(item.get("count") or 0),
                success_condition=str(item.get("successCondition") or ""),
                failure_condition=str(item.get("failureCondition") or ""),
                failure_limit=int(item.get("failureLimit") or 0),
                consecutive_success_limit=int(item.get("consecutiveSuccessLimit") or 0),
                inconclusive_limit=int(item.get("inconclusiveLimit") or 0),
            )
        except (TypeError, ValueError) as exc:
            raise AnalysisError(f"metric {name}: {exc}") from exc


@dataclass(frozen=True)
class Analysis:
    """The metrics and the arguments with a value known before the rollout (the template's defaults)."""

    metrics: tuple[Metric, ...]
    args: Mapping[str, str | None] = field(default_factory=dict)


def resolve_args(template: str, args: Mapping[str, str | None], *, quoted: bool = False) -> str:
    """`template` with every `{{args.NAME}}` replaced as Argo Rollouts does; an unresolved tag is an error.

    quoted: escape values as strconv.Quote does (ResolveQuotedArgs, used on a metric marshalled to JSON).
    """
    missing = [name for name, value in args.items() if value is None]
    if missing:
        raise AnalysisError(f'argument "{missing[0]}" was not supplied')
    if "{{" in _TAG.sub("", template):
        raise AnalysisError(f"cannot find end tag='}}}}' in {template!r}")  # fasttemplate.NewTemplate's error

    def sub(match: re.Match[str]) -> str:
        tag = match.group(1).strip()
        if not tag.startswith("args.") or tag[len("args.") :] not in args:
            raise AnalysisError(f"failed to resolve {{{{{match.group(1)}}}}}")
        value = str(args[tag[len("args.") :]])
        return json.dumps(value)[1:-1] if quoted else value

    return _TAG.sub(sub, template)


def parse_condition(metric: str, text: str, args: Mapping[str, str | None] | None = None) -> Condition:
    """`result[0] <op> number` (after substituting `args`); anything else names the metric and the condition."""
    resolved = text
    if args is not None and "{{" in text:
        try:
            resolved = resolve_args(text, args)
        except AnalysisError as exc:
            raise AnalysisError(f"metric {metric}: condition {text!r}: {exc}") from exc
    m = _CONDITION.match(resolved)
    if not m:
        raise AnalysisError(
            f"metric {metric}: condition {text!r} is not of the form `result[0] <op> number` (op one of < <= > >= == !=)"
        )
    return Condition(m.group(1), float(m.group(2)))


def validate(analysis: Analysis) -> list[str]:
    """Every problem of the metrics: conditions, limits, names. Empty when the drill and Argo agree on all."""
    problems: list[str] = []
    seen: set[str] = set()
    for metric in analysis.metrics:
        if metric.name in seen:
            problems.append(f"metric {metric.name}: defined twice")
        seen.add(metric.name)
        if not (metric.success_condition or metric.failure_condition):
            problems.append(f"metric {metric.name}: needs a successCondition or a failureCondition")
        for text in (metric.success_condition, metric.failure_condition):
            if text:
                try:
                    parse_condition(metric.name, text, _known(analysis.args, text))
                except AnalysisError as exc:
                    problems.append(str(exc))
        if metric.count < 1:
            problems.append(f"metric {metric.name}: count must be >= 1 (a canary step waits for its verdict)")
        if metric.failure_limit < 0 and metric.consecutive_success_limit <= 0:
            problems.append(
                f"metric {metric.name}: failureLimit < 0 needs consecutiveSuccessLimit > 0 (upstream validation)"
            )
    return problems


def _known(args: Mapping[str, str | None], text: str) -> Mapping[str, str | None]:
    """The arguments a condition may use at render: those with a value (a Rollout-supplied one is refused)."""
    return {k: v for k, v in args.items() if v is not None or f"args.{k}" in text}


def measurement_phase(metric: Metric, value: float, args: Mapping[str, str | None] | None = None) -> Phase:
    """The phase of one measurement whose query returned `value` as result[0] (EvaluateResult)."""
    success = parse_condition(metric.name, metric.success_condition, args) if metric.success_condition else None
    failure = parse_condition(metric.name, metric.failure_condition, args) if metric.failure_condition else None
    ok = success.holds(value) if success else False
    bad = failure.holds(value) if failure else False
    if success is None and failure is None:
        return Phase.SUCCESSFUL
    if success is not None and failure is None:
        bad = not ok
    elif success is None and failure is not None:
        ok = not bad
    if bad:
        return Phase.FAILED
    return Phase.SUCCESSFUL if ok else Phase.INCONCLUSIVE


def metric_phase(metric: Metric, measurements: Sequence[Phase]) -> Phase:
    """The metric's phase after these measurement phases (assessMetricStatus; errors are not modelled)."""
    if not measurements:
        return Phase.RUNNING
    failed = sum(1 for p in measurements if p is Phase.FAILED)
    inconclusive = sum(1 for p in measurements if p is Phase.INCONCLUSIVE)
    consecutive = 0
    for p in reversed(measurements):
        if p is not Phase.SUCCESSFUL:
            break
        consecutive += 1
    phase: Phase | None = None
    if metric.failure_limit >= 0 and failed > metric.failure_limit:
        phase = Phase.FAILED
    if inconclusive > metric.inconclusive_limit:
        phase = Phase.INCONCLUSIVE  # upstream checks this second: it wins over Failed
    if phase is not None:
        return phase
    if metric.consecutive_success_limit > 0 and consecutive >= metric.consecutive_success_limit:
        return Phase.SUCCESSFUL
    if len(measurements) >= metric.count:
        if metric.failure_limit >= 0 and metric.consecutive_success_limit > 0:
            return Phase.INCONCLUSIVE
        if metric.consecutive_success_limit > 0:
            return Phase.FAILED
        return Phase.SUCCESSFUL
    return Phase.RUNNING


def from_values(values: Mapping[str, Any]) -> Analysis:
    """The analysis the chart renders from these (merged) values, with the template's default arguments."""
    rollout = values.get("rollout") or {}
    block = rollout.get("analysis") or {}
    items = block.get("metrics") or []
    if not isinstance(items, list) or not items:
        raise AnalysisError("rollout.analysis.metrics: no metrics")
    args: dict[str, str | None] = {
        "namespace": None,
        "canary-release": None,
        "window": str(block.get("window", "")),
        "min-requests": str(block.get("minRequests", "")),
    }
    return Analysis(tuple(Metric.from_mapping(m) for m in items), args)


def from_template(doc: Mapping[str, Any]) -> Analysis:
    """The analysis a rendered AnalysisTemplate carries."""
    spec = doc.get("spec") or {}
    args = {str(a["name"]): (None if a.get("value") is None else str(a["value"])) for a in spec.get("args") or []}
    return Analysis(tuple(Metric.from_mapping(m) for m in spec.get("metrics") or []), args)


def merged_values(root: Path, env: str | None = None) -> dict[str, Any]:
    """The chart's values with an env's delta over them, merged as Helm merges (maps deep, lists replaced)."""
    values = _load(root / CHART_VALUES)
    if env is not None:
        values = _merge(values, _load(root / ENV_VALUES.format(env=env)))
    return values


def load(root: Path, env: str | None = None) -> Analysis:
    """The analysis of env (or the chart's default) from the one source, validated; a problem raises."""
    analysis = from_values(merged_values(root, env))
    problems = validate(analysis)
    if problems:
        raise AnalysisError("; ".join(problems))
    return analysis


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise AnalysisError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise AnalysisError(f"{path}: not a mapping")
    return data


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
