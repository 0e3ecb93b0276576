"""pipeline.rollout: args substitution, conditions and phases as Argo Rollouts computes them; the pod budget."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.rollout import analysis, pod_budget
from pipeline.rollout.analysis import AnalysisError, Metric, Phase
from pipeline.runtime.tools import require

ARGS = {"namespace": "llm-prod", "canary-release": "0.2.0+gabc", "window": "1m", "min-requests": "50"}


def _metric(**kw: object) -> Metric:
    base: dict[str, object] = {"name": "m", "query": "q", "interval": "30s", "count": 4}
    return Metric.from_mapping({**base, **kw})


# --- {{args.NAME}} substitution (utils/template/template.go) ---------------------------------------


def test_args_substituted_with_whitespace_trimmed_tags() -> None:
    text = 'x{release="{{args.canary-release}}", ns="{{ args.namespace }}"}[{{args.window}}]'
    assert analysis.resolve_args(text, ARGS) == 'x{release="0.2.0+gabc", ns="llm-prod"}[1m]'


def test_unknown_tag_is_an_error_naming_it() -> None:
    with pytest.raises(AnalysisError, match=r"failed to resolve \{\{args.nope\}\}"):
        analysis.resolve_args("a {{args.nope}}", ARGS)
    with pytest.raises(AnalysisError, match=r"failed to resolve \{\{ metric.x \}\}"):
        analysis.resolve_args("a {{ metric.x }}", ARGS)


def test_argument_without_value_is_an_error() -> None:
    with pytest.raises(AnalysisError, match='argument "canary-release" was not supplied'):
        analysis.resolve_args("{{args.namespace}}", {**ARGS, "canary-release": None})


def test_unclosed_tag_is_an_error() -> None:
    with pytest.raises(AnalysisError, match="cannot find end tag"):
        analysis.resolve_args("{{args.namespace}} and {{args.window", ARGS)


def test_quoted_substitution_escapes_like_strconv_quote() -> None:
    assert analysis.resolve_args("{{args.v}}", {"v": 'a"b\nc'}, quoted=True) == 'a\\"b\\nc'
    assert analysis.resolve_args("{{args.v}}", {"v": 'a"b'}) == 'a"b'


# --- conditions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "holds"),
    [
        ("result[0] <= 1.5", 1.5, True),
        ("result[0] < 1.5", 1.5, False),
        ("result[0]>2", 2.5, True),
        ("result[0] >= 50", 49.0, False),
        ("result[0] == 0", 0.0, True),
        ("result[0] != 0", 0.0, False),
        ("result[0] <= 1e-3", 0.0005, True),
        ("result[0] > -1", 0.0, True),
    ],
)
def test_condition_evaluates_on_a_float(text: str, value: float, holds: bool) -> None:
    assert analysis.parse_condition("m", text).holds(value) is holds


@pytest.mark.parametrize(
    "text",
    [
        "result[0] <= 1.5 && result[0] > 0",
        "result[1] < 2",
        "len(result) > 0",
        "result[0] <= args",
        "asFloat(result) < 2",
        "result[0] =< 2",
        "",
    ],
)
def test_other_conditions_are_refused_naming_metric_and_condition(text: str) -> None:
    with pytest.raises(AnalysisError) as err:
        analysis.parse_condition("error-ratio", text)
    assert "metric error-ratio" in str(err.value) and repr(text) in str(err.value)


def test_condition_with_an_argument_is_checked_after_substitution() -> None:
    assert analysis.parse_condition("m", "result[0] >= {{args.min-requests}}", ARGS).threshold == 50
    with pytest.raises(AnalysisError, match="not of the form"):
        analysis.parse_condition("m", "result[0] >= {{args.window}}", ARGS)  # "1m" is not a number


# --- phases (utils/evaluate/evaluate.go, analysis/analysis.go) -----------------------------------


def test_measurement_phase_with_both_conditions() -> None:
    m = _metric(successCondition="result[0] <= 2", failureCondition="result[0] > 2")
    assert analysis.measurement_phase(m, 1.0) is Phase.SUCCESSFUL
    assert analysis.measurement_phase(m, 2.5) is Phase.FAILED
    # NaN (the queries' answer below min-requests): neither condition holds.
    assert analysis.measurement_phase(m, math.nan) is Phase.INCONCLUSIVE


def test_measurement_phase_with_one_condition() -> None:
    only_success = _metric(successCondition="result[0] >= 50")
    assert analysis.measurement_phase(only_success, 10) is Phase.FAILED
    assert analysis.measurement_phase(only_success, math.nan) is Phase.FAILED
    only_failure = _metric(failureCondition="result[0] > 2")
    assert analysis.measurement_phase(only_failure, 1) is Phase.SUCCESSFUL
    assert analysis.measurement_phase(only_failure, math.nan) is Phase.SUCCESSFUL


def test_metric_phase_follows_limits() -> None:
    s, f, i = Phase.SUCCESSFUL, Phase.FAILED, Phase.INCONCLUSIVE
    m = _metric(failureLimit=1, consecutiveSuccessLimit=2, inconclusiveLimit=3, count=4)
    assert analysis.metric_phase(m, []) is Phase.RUNNING
    assert analysis.metric_phase(m, [f]) is Phase.RUNNING
    assert analysis.metric_phase(m, [f, f]) is Phase.FAILED  # failed 2 > failureLimit 1
    assert analysis.metric_phase(m, [s, s]) is Phase.SUCCESSFUL  # consecutiveSuccessLimit reached early
    assert analysis.metric_phase(m, [s, f, s, i]) is Phase.INCONCLUSIVE  # count reached, neither limit
    assert analysis.metric_phase(m, [i, i, i, i]) is Phase.INCONCLUSIVE  # inconclusive 4 > 3
    plain = _metric(count=3)  # failureLimit 0, no consecutiveSuccessLimit
    assert analysis.metric_phase(plain, [s, s]) is Phase.RUNNING
    assert analysis.metric_phase(plain, [s, s, s]) is Phase.SUCCESSFUL
    assert analysis.metric_phase(plain, [s, f]) is Phase.FAILED
    success_only = _metric(failureLimit=-1, consecutiveSuccessLimit=2, count=3)
    assert analysis.metric_phase(success_only, [f, s, f]) is Phase.FAILED  # count reached without 2 in a row


# --- the one source -------------------------------------------------------------------------------


@pytest.mark.parametrize("env", [None, "dev", "staging", "prod"])
def test_repo_analysis_loads_and_validates(repo_root: Path, env: str | None) -> None:
    loaded = analysis.load(repo_root, env)
    assert [m.name for m in loaded.metrics][:1] == ["canary-requests"]
    for metric in loaded.metrics:
        assert analysis.resolve_args(metric.query, {**loaded.args, **ARGS}).count("{{") == 0


def test_env_delta_overrides_the_chart_values(tmp_path: Path, repo_root: Path) -> None:
    (tmp_path / "charts/llm-service").mkdir(parents=True)
    (tmp_path / "environments/x").mkdir(parents=True)
    chart = yaml.safe_load((repo_root / analysis.CHART_VALUES).read_text())
    (tmp_path / analysis.CHART_VALUES).write_text(yaml.safe_dump(chart))
    (tmp_path / "environments/x/values.yaml").write_text(
        yaml.safe_dump(
            {"rollout": {"analysis": {"minRequests": 7, "metrics": [chart["rollout"]["analysis"]["metrics"][0]]}}}
        )
    )
    loaded = analysis.load(tmp_path, "x")
    assert loaded.args["min-requests"] == "7" and loaded.args["window"] == chart["rollout"]["analysis"]["window"]
    assert [m.name for m in loaded.metrics] == ["canary-requests"]


def test_bad_condition_in_values_is_refused_naming_it(tmp_path: Path, repo_root: Path) -> None:
    (tmp_path / "charts/llm-service").mkdir(parents=True)
    chart = yaml.safe_load((repo_root / analysis.CHART_VALUES).read_text())
    chart["rollout"]["analysis"]["metrics"][2]["failureCondition"] = "result[0] > 1.5 || isNaN(result[0])"
    (tmp_path / analysis.CHART_VALUES).write_text(yaml.safe_dump(chart))
    with pytest.raises(AnalysisError) as err:
        analysis.load(tmp_path)
    assert "metric ttft-p95-ratio" in str(err.value) and "isNaN(result[0])" in str(err.value)


def test_condition_may_not_use_an_argument_the_rollout_supplies() -> None:
    a = analysis.Analysis((_metric(successCondition="result[0] >= {{args.canary-release}}"),), {"canary-release": None})
    assert any('argument "canary-release" was not supplied' in p for p in analysis.validate(a))


def test_queries_are_valid_promql_after_substitution(repo_root: Path, tmp_path: Path) -> None:
    """promtool parses every query of every env once the arguments are in (the drill runs them as they are)."""
    rules = []
    for env in ("staging", "prod"):
        loaded = analysis.load(repo_root, env)
        rules += [
            {"record": f"canary:{env}:{m.name.replace('-', '_')}", "expr": analysis.resolve_args(m.query, ARGS)}
            for m in loaded.metrics
        ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "canary", "rules": rules}]}))
    proc = subprocess.run([require("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "c", "rules": [{"record": "x", "expr": "sum(rate(x[1m]"}]}]}))
    assert subprocess.run([require("promtool"), "check", "rules", str(broken)], capture_output=True).returncode != 0


# --- pod budget (utils/replicaset/canary.go) ------------------------------------------------------


def test_basic_canary_is_capped_by_max_surge() -> None:
    assert pod_budget.peak_pods({"maxSurge": 0, "maxUnavailable": 1}, 5).pods == 5
    assert pod_budget.peak_pods({"maxSurge": "25%"}, 5).pods == 7  # ceil(1.25)
    assert pod_budget.peak_pods({}, 4).pods == 5  # upstream default maxSurge 25%


def test_traffic_routed_canary_counts_transitions_and_aborts() -> None:
    steps = [{"setCanaryScale": {"weight": 25}}, {"setWeight": 25}, {"analysis": {}}, {"setWeight": 50}]
    routed = {"trafficRouting": {"plugins": {}}, "dynamicStableScale": True, "steps": steps}
    peak = pod_budget.peak_pods(routed, 12)
    assert (peak.pods, peak.when) == (18, "abort at setWeight 50")
    # The final promotion from a low weight nearly doubles: the canary goes to 3 before the stable's 90 % leaves.
    small = {"trafficRouting": {"plugins": {}}, "dynamicStableScale": True, "steps": [{"setWeight": 10}]}
    peak = pod_budget.peak_pods(small, 3)
    assert (peak.pods, peak.when) == (6, "setWeight 10 -> 100")
    # Without dynamicStableScale the stable stays at 100 %: the full canary comes on top.
    assert pod_budget.peak_pods({**routed, "dynamicStableScale": False}, 12).pods == 24


def test_problems_name_the_rollout_and_the_needed_surge() -> None:
    rollout = {
        "metadata": {"name": "llm"},
        "spec": {
            "strategy": {
                "canary": {"trafficRouting": {"plugins": {}}, "dynamicStableScale": True, "steps": [{"setWeight": 50}]}
            }
        },
    }
    assert pod_budget.problems(rollout, range(2, 5), surge=2) == []
    (msg,) = pod_budget.problems(rollout, range(2, 5), surge=1)
    assert (
        msg.startswith("Rollout <llm>: 5 model-serving pods at 3 replica(s) (setWeight 0 -> 50)")
        and "raise rollout.surge to 2" in msg
    )
