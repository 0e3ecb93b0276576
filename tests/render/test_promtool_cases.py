"""The charts' promtool cases (charts/<chart>/tests/*.test.yaml): none is dropped, none is lost when
render splits the files into test groups on their rule subsets, and the SLO scenarios judged at a
5m evaluation_interval (slo-long.test.yaml) still fail, naming file, group, alert and eval time,
when the rule they cover is broken (real helm render of dev, real promtool)."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.checks import promtool_subset as ps
from pipeline.checks import promtool_tests as pt
from pipeline.checks.manifests import write_alert_tests
from pipeline.core.context import RunContext
from pipeline.runtime.tools import require
from pipeline.stages import render

# Cases (alert_rule_test + promql_expr_test entries) per chart and alert. Moving a case between
# files keeps these; dropping one, or a whole file, fails here: change this only with the cases.
CASES = {
    "llm-service": {
        "LLMCostIncrease": 2,
        "LLMErrorBudgetBurnFast": 15,
        "LLMErrorBudgetBurnSlow": 5,
        "LLMGPUSaturated": 2,
        "LLMGPUUnderutilized": 4,
        "LLMHighErrorRate": 4,
        "LLMHighLatencyP95": 2,
        "LLMHighTPOTP95": 3,
        "LLMHighTTFTP95": 2,
        "LLMKVCacheSaturated": 2,
        "LLMQueueDepthHigh": 2,
        "LLMRollbackSignalAbsent": 7,
        "LLMScrapeTargetDown": 3,
    },
    "rollback-controller": {
        "RollbackControllerArgoCDTokenExpired": 4,
        "RollbackControllerArgoCDTokenExpiring": 3,
        "RollbackControllerRevertFailed": 3,
        "RollbackControllerSyncFailed": 3,
        "RollbackControllerSyncHeld": 4,
        "RollbackControllerWebhookErrors": 3,
    },
}


def cases(test: dict[str, Any]) -> list[tuple[str, str]]:
    """(alertname or `expr: ...`, eval_time) of every case of a promtool test file, in order."""
    found = []
    for group in test.get("tests") or []:
        found += [(c["alertname"], str(c["eval_time"])) for c in group.get("alert_rule_test") or []]
        found += [(f"expr: {c['expr']}", str(c["eval_time"])) for c in group.get("promql_expr_test") or []]
    return found


def test_no_case_is_dropped(repo_root: Path) -> None:
    counted = {
        chart: dict(
            Counter(
                name
                for f in sorted((repo_root / "charts" / chart / "tests").glob("*.test.yaml"))
                for name, _ in cases(yaml.safe_load(f.read_text()))
            )
        )
        for chart in CASES
    }
    assert counted == CASES
    assert sum(sum(c.values()) for c in counted.values()) == 73


@pytest.mark.parametrize("chart", sorted(CASES))
def test_the_group_files_render_runs_hold_every_case(repo_root: Path, tmp_path: Path, chart: str) -> None:
    # The chart's files as render instantiates them for an env, then split as run_tests splits them.
    work, scratch = tmp_path / "rendered", tmp_path / "split"
    (work / "dev").mkdir(parents=True)
    (work / "dev/prometheus-rules.yaml").write_text("groups: []\n")
    written = write_alert_tests("dev", {"groups": []}, work / "dev", repo_root / "charts" / chart / "tests")
    assert written
    for test in written:
        rel = str(test.relative_to(work))
        groups = ps.split(test, pt.rule_files(test) or [], scratch / rel, scratch)
        assert groups is not None, rel
        split_cases = [c for g in groups for c in cases(yaml.safe_load((scratch / g.path).read_text()))]
        assert split_cases == cases(yaml.safe_load(test.read_text())), rel


@pytest.fixture(scope="module")
def promtool() -> str:
    return require("promtool")


@pytest.fixture(scope="module")
def rendered_dev(repo_root: Path, crd_schemas: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dev rendered by the render stage (its rules and instantiated test files), promtool not run."""
    base = tmp_path_factory.mktemp("render")
    opts = render.RenderOptions(
        envs=["dev"],
        out=base / "out",
        crd_schemas=str(crd_schemas),
        repo_root=repo_root,
        skip=frozenset({"trivy", "promtool", "lint"}),
    )
    result = render.run(opts, RunContext(run_dir=base / "run"))
    assert (base / "out/dev/slo-long.test.yaml").is_file(), result.summary
    return base / "out"


def _alert(rules: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name or r.get("record") == name)


def _no_for(rule: dict[str, Any]) -> None:
    del rule["for"]


def _expr(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(rule: dict[str, Any]) -> None:
        assert old in rule["expr"], rule["expr"]
        rule["expr"] = rule["expr"].replace(old, new)

    return edit


# slo-long.test.yaml's groups: 1 the IdP outage, 2 4% for hours, 3 1% all day.
MUTATIONS = [
    # The slow burn pages at once instead of after 15m: `not yet` at 10m breaks.
    (["LLMErrorBudgetBurnSlow"], _no_for, "group-2-of-3", "alertname: LLMErrorBudgetBurnSlow, time: 10m"),
    # A threshold above 4%: the ticket at 7h is missing.
    (["LLMErrorBudgetBurnSlow"], _expr("(6 *", "(10 *"), "group-2-of-3", "alertname: LLMErrorBudgetBurnSlow, time: 7h"),
    # The release ratios count the IdP's 503s: the outage would roll the release back.
    (
        ["llm:gateway_release_errors:ratio_rate5m", "llm:gateway_release_errors:ratio_rate1h"],
        _expr(', cause="release"', ""),
        "group-1-of-3",
        "alertname: LLMErrorBudgetBurnFast, time: 3h",
    ),
    # A fast-burn threshold below 1%: the old release's steady 1% pages.
    (
        ["LLMErrorBudgetBurnFast"],
        _expr("(14.4 *", "(1 *"),
        "group-3-of-3",
        "alertname: LLMErrorBudgetBurnFast, time: 6h5m",
    ),
    # The symptom alert above 50%: the IdP outage no longer pages.
    (["LLMHighErrorRate"], _expr("> 0.05", "> 0.6"), "group-1-of-3", "alertname: LLMHighErrorRate, time: 3h"),
]


@pytest.mark.slow
def test_slo_long_cases_pass_on_the_rendered_rules(rendered_dev: Path, tmp_path: Path, promtool: str) -> None:
    work = tmp_path / "rendered"
    shutil.copytree(rendered_dev, work)
    run = pt.run_tests(promtool, ["dev/slo-long.test.yaml", "dev/slo.test.yaml"], work)
    assert not run.failed, run.report()


@pytest.mark.slow
@pytest.mark.parametrize(("names", "mutate", "group", "failure"), MUTATIONS)
def test_a_broken_slo_rule_fails_its_5m_case_naming_file_group_and_test(
    rendered_dev: Path,
    tmp_path: Path,
    promtool: str,
    names: list[str],
    mutate: Callable[[dict[str, Any]], None],
    group: str,
    failure: str,
) -> None:
    work = tmp_path / "rendered"
    shutil.copytree(rendered_dev, work)
    rules_file = work / "dev/prometheus-rules.yaml"
    rules = yaml.safe_load(rules_file.read_text())
    for name in names:
        mutate(_alert(rules, name))
    rules_file.write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    run = pt.run_tests(promtool, ["dev/slo-long.test.yaml"], work)
    assert [f.path for f in run.failed] == ["dev/slo-long.test.yaml"]
    report = run.report()
    assert report.startswith("dev/slo-long.test.yaml:\n"), report
    assert f"Unit Testing:  dev/slo-long.test.yaml/{group}.yaml" in report and failure in report, report
