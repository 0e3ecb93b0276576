"""Each promtool test group runs on only the rules its assertions read (pipeline.checks.promtool_subset),
on the real promtool: a dependency through recording rules in another group and another rule file
is kept, a broken rule still fails its test (named by file and group), and whatever cannot be told
keeps every rule."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.checks import promtool_subset as ps
from pipeline.checks import promtool_tests as pt
from pipeline.runtime.tools import require

# Two rule files; the alert reads job:errors:ratio (group `ratios`, file 2), which reads
# job:errors:rate1m and job:requests:rate1m (group `rates`, file 1). `unrelated`, `OtherAlert`
# and `lonely` are read by nothing the tests assert; only `lonely` is read by no alert either.
RATES = """\
groups:
  - name: rates
    rules:
      - record: job:errors:rate1m
        expr: sum by (job) (rate(errors_total[1m]))
      - record: job:requests:rate1m
        expr: sum by (job) (rate(requests_total[1m]))
      - record: unrelated:rate1m
        expr: sum by (job) (rate(other_total[1m]))
      - record: lonely:sum
        expr: sum(other_total)
"""
RATIOS = """\
groups:
  - name: ratios
    rules:
      - record: job:errors:ratio
        expr: job:errors:rate1m / job:requests:rate1m
      - alert: OtherAlert
        expr: unrelated:rate1m > 1
  - name: alerts
    rules:
      - alert: HighErrorRatio
        expr: job:errors:ratio{job="api"} > 0.1
        for: 2m
        labels: {severity: page}
        annotations: {summary: '{{ $labels.job }} fails {{ $value | humanizePercentage }}'}
"""

TEST = """\
rule_files: [rates.yaml, ratios.yaml]
evaluation_interval: 1m
group_eval_order: [rates, ratios, alerts]
tests:
  - name: a fifth of the requests fail
    interval: 1m
    input_series:
      - series: 'requests_total{job="api"}'
        values: '0+100x30'
      - series: 'errors_total{job="api"}'
        values: '0+20x30'
    alert_rule_test:
      - eval_time: 1m
        alertname: HighErrorRatio
        exp_alerts: []
      - eval_time: 10m
        alertname: HighErrorRatio
        exp_alerts:
          - exp_labels: {severity: page, job: api}
            exp_annotations: {summary: 'api fails 20%'}
  - name: the recorded ratio
    interval: 1m
    input_series:
      - series: 'requests_total{job="api"}'
        values: '0+100x10'
      - series: 'errors_total{job="api"}'
        values: '0+50x10'
    promql_expr_test:
      - expr: job:errors:ratio
        eval_time: 5m
        exp_samples:
          - labels: 'job:errors:ratio{job="api"}'
            value: 0.5
"""


@pytest.fixture(scope="module")
def promtool() -> str:
    return require("promtool")


def write(root: Path, test: str = TEST, ratios: str = RATIOS) -> str:
    (root / "dev").mkdir(parents=True, exist_ok=True)
    (root / "dev/rates.yaml").write_text(RATES)
    (root / "dev/ratios.yaml").write_text(ratios)
    (root / "dev/x.test.yaml").write_text(test)
    return "dev/x.test.yaml"


def kept(group_file: Path) -> list[str]:
    """`group: rule` of each rule a written group file's rule files keep, in order."""
    test = yaml.safe_load(group_file.read_text())
    names = []
    for rel in test["rule_files"]:
        for group in yaml.safe_load((group_file.parent / rel).read_text())["groups"]:
            names += [f"{group['name']}: {r.get('record') or r.get('alert')}" for r in group["rules"]]
    return names


def test_each_group_keeps_what_its_assertions_read_through_other_groups_and_files(tmp_path: Path) -> None:
    work, out = tmp_path / "rendered", tmp_path / "split"
    test = work / write(work)
    groups = ps.split(test, pt.rule_files(test) or [], out / "dev/x.test.yaml", out)
    assert groups is not None
    assert [g.path for g in groups] == ["dev/x.test.yaml/group-1-of-2.yaml", "dev/x.test.yaml/group-2-of-2.yaml"]
    first, second = (out / g.path for g in groups)
    assert kept(first) == [
        "rates: job:errors:rate1m",
        "rates: job:requests:rate1m",
        "ratios: job:errors:ratio",
        "alerts: HighErrorRatio",
    ]
    assert kept(second) == ["rates: job:errors:rate1m", "rates: job:requests:rate1m", "ratios: job:errors:ratio"]
    # The second group keeps no alert: its order must not name the group it no longer loads.
    assert yaml.safe_load(second.read_text())["group_eval_order"] == ["rates", "ratios"]
    assert yaml.safe_load(second.read_text())["tests"][0]["name"] == "the recorded ratio"


def test_the_subset_passes_and_a_broken_dependency_still_fails_naming_file_and_group(
    tmp_path: Path, promtool: str
) -> None:
    work = tmp_path / "rendered"
    tests = [write(work)]
    assert not pt.run_tests(promtool, tests, work).failed
    # Break the recording rule two steps below the alert, in the other rule file: the alert's
    # case and the recorded ratio's case must both fail, each reported under its group file.
    (work / "dev/rates.yaml").write_text(RATES.replace("rate(errors_total[1m])", "rate(errors_total[1m]) / 4"))
    run = pt.run_tests(promtool, tests, work)
    assert [f.path for f in run.failed] == ["dev/x.test.yaml"]
    report = run.report()
    assert report.startswith("dev/x.test.yaml:\n"), report
    assert "Unit Testing:  dev/x.test.yaml/group-1-of-2.yaml" in report, report
    assert "alertname: HighErrorRatio" in report and "time: 10m" in report, report
    assert "Unit Testing:  dev/x.test.yaml/group-2-of-2.yaml" in report, report
    assert 'expr: "job:errors:ratio"' in report, report


def test_a_passing_group_is_left_out_of_the_report(tmp_path: Path, promtool: str) -> None:
    work = tmp_path / "rendered"
    tests = [write(work, test=TEST.replace("value: 0.5", "value: 0.25"))]
    report = pt.run_tests(promtool, tests, work).report()
    assert "group-2-of-2.yaml" in report and "group-1-of-2.yaml" not in report, report


EVERY_RULE = {"job:errors:rate1m", "job:requests:rate1m", "unrelated:rate1m", "lonely:sum", "job:errors:ratio"} | {
    "OtherAlert",
    "HighErrorRatio",
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # Selects by a regex on the name: every rule may be read.
        ('{__name__=~"job:.*"}', EVERY_RULE),
        # ALERTS is written by every alerting rule: all of them, and what they read.
        ('ALERTS{alertname="HighErrorRatio"}', EVERY_RULE - {"lonely:sum"}),
    ],
)
def test_reads_that_cannot_be_pinned_keep_more(tmp_path: Path, expr: str, expected: set[str]) -> None:
    test = yaml.safe_load(TEST)
    test["tests"] = [{**test["tests"][1], "promql_expr_test": [{"expr": expr, "eval_time": "1m", "exp_samples": []}]}]
    work, out = tmp_path / "rendered", tmp_path / "split"
    path = work / write(work, test=yaml.safe_dump(test))
    (group,) = ps.split(path, pt.rule_files(path) or [], out / "dev/x.test.yaml", out) or []
    assert {n.split(": ", 1)[1] for n in kept(out / group.path)} == expected


def test_a_template_running_a_query_keeps_every_rule(tmp_path: Path) -> None:
    ratios = RATIOS.replace("{{ $labels.job }} fails", '{{ with query "unrelated:rate1m" }}{{ . }}{{ end }}')
    work, out = tmp_path / "rendered", tmp_path / "split"
    path = work / write(work, ratios=ratios)
    groups = ps.split(path, pt.rule_files(path) or [], out / "dev/x.test.yaml", out) or []
    assert {n.split(": ", 1)[1] for n in kept(out / groups[0].path)} == EVERY_RULE


def test_an_unreadable_test_file_runs_as_it_is_and_promtool_names_the_problem(tmp_path: Path, promtool: str) -> None:
    work = tmp_path / "rendered"
    tests = [write(work, test="rule_files: [rates.yaml]\ntests: [")]
    assert ps.split(work / tests[0], [], tmp_path / "split" / tests[0], tmp_path / "split") is None
    run = pt.run_tests(promtool, tests, work)
    assert [f.path for f in run.failed] == tests
    assert "dev/x.test.yaml" in run.report() and "yaml" in run.report().lower(), run.report()


def test_scalars_reach_promtool_as_written(tmp_path: Path, promtool: str) -> None:
    # `0.10` unquoted is a float to a YAML loader but the label value "0.10" to promtool: the
    # split files must say `0.10` too, not a re-dumped `0.1`.
    ratios = RATIOS.replace("labels: {severity: page}", "labels: {severity: page, threshold: 0.10}")
    test = TEST.replace(
        "exp_labels: {severity: page, job: api}", 'exp_labels: {severity: page, job: api, threshold: "0.10"}'
    )
    work = tmp_path / "rendered"
    tests = [write(work, test=test, ratios=ratios)]
    direct = subprocess.run([promtool, "test", "rules", tests[0]], cwd=work, capture_output=True, text=True)
    assert direct.returncode == 0, direct.stdout + direct.stderr
    run = pt.run_tests(promtool, tests, work)
    assert not run.failed, run.report()
