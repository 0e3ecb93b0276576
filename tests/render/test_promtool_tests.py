"""`promtool test rules` in parallel with reuse of unchanged passes (pipeline.checks.promtool_tests),
on the real promtool: a failing case names its file and test, failures are never reused, a changed
rule file runs again, and the groups of all files share no more processes than asked, balanced."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from pipeline.checks import promtool_tests as pt
from pipeline.runtime.tools import require

RULES = """\
groups:
  - name: demo
    rules:
      - alert: QueueTooDeep
        expr: queue_depth > 10
        for: 2m
        labels: {severity: warning}
"""

# Input above the threshold from minute 0: pending at 0-1m, firing from 2m.
GOOD = """\
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - name: deep queue fires after for
    interval: 1m
    input_series:
      - series: 'queue_depth{{job="q"}}'
        values: '20x400'
    alert_rule_test:
      - eval_time: 1m
        alertname: QueueTooDeep
        exp_alerts: []
      - eval_time: {last}
        alertname: QueueTooDeep
        exp_alerts:
          - exp_labels: {{severity: warning, job: q}}
"""

# Deliberately wrong: claims the alert stays silent although the queue is deep for 5 minutes.
BAD = """\
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - name: wrongly expects silence
    interval: 1m
    input_series:
      - series: 'queue_depth{job="q"}'
        values: '20x10'
    alert_rule_test:
      - eval_time: 5m
        alertname: QueueTooDeep
        exp_alerts: []
"""


@pytest.fixture(scope="module")
def promtool() -> str:
    return require("promtool")


def write_suite(root: Path, files: dict[str, str]) -> list[str]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        (root / rel).with_name("rules.yaml").write_text(RULES)
    return sorted(files)


def test_a_failing_case_names_its_file_and_test_and_is_never_reused(tmp_path: Path, promtool: str) -> None:
    work, cache = tmp_path / "rendered", tmp_path / "cache"
    tests = write_suite(work, {"dev/good.test.yaml": GOOD.format(last="5m"), "prod/bad.test.yaml": BAD})

    first = pt.run_tests(promtool, tests, work, cache=cache)
    assert [f.path for f in first.failed] == ["prod/bad.test.yaml"]
    report = first.report()
    assert report.startswith("prod/bad.test.yaml:\n"), report
    assert "alertname: QueueTooDeep" in report and "time: 5m" in report, report
    assert "wrongly expects silence" in report, report  # the test group's name
    assert "dev/good.test.yaml" not in report

    again = pt.run_tests(promtool, tests, work, cache=cache)
    assert [(f.path, f.passed, f.reused) for f in again.files] == [
        ("dev/good.test.yaml", True, True),
        ("prod/bad.test.yaml", False, False),  # a failure is proven again, every time
    ]
    assert (
        again.summary()
        == "2 test files (1 run in 1 promtool process, 1 passed before with identical tests, rules and promtool)"
    )


def test_a_changed_rule_file_runs_its_tests_again(tmp_path: Path, promtool: str) -> None:
    work, cache = tmp_path / "rendered", tmp_path / "cache"
    tests = write_suite(work, {"dev/good.test.yaml": GOOD.format(last="5m")})
    assert not pt.run_tests(promtool, tests, work, cache=cache).failed
    assert pt.run_tests(promtool, tests, work, cache=cache).reused == 1
    # The threshold moves above the input: the cached pass must not hide the broken case.
    (work / "dev/rules.yaml").write_text(RULES.replace("> 10", "> 100"))
    rerun = pt.run_tests(promtool, tests, work, cache=cache)
    assert rerun.reused == 0 and [f.path for f in rerun.failed] == ["dev/good.test.yaml"]


def test_groups_spread_over_at_most_workers_processes_balanced_by_steps(tmp_path: Path, promtool: str) -> None:
    work = tmp_path / "rendered"
    lasts = (5, 300, 30, 120, 60)
    tests = write_suite(work, {f"e{i}/t.test.yaml": GOOD.format(last=f"{m}m") for i, m in enumerate(lasts)})
    processes: list[list[str]] = []
    running, peak = 0, 0
    lock = threading.Lock()

    def real_promtool(argv: list[str], cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        nonlocal running, peak
        with lock:
            processes.append(argv[3:])
            running += 1
            peak = max(peak, running)
        try:
            return subprocess.run(
                argv, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        finally:
            with lock:
                running -= 1

    serial = pt.run_tests(promtool, tests, work, workers=1, runner=real_promtool)
    assert not serial.failed and peak == 1 and serial.processes == 1
    # One process over every file's group, in the order asked.
    assert [a.split("/group-")[0] for a in processes[0]] == tests
    assert [f.path for f in serial.files] == tests  # reported in the order asked

    processes.clear()
    both = pt.run_tests(promtool, tests, work, workers=2, runner=real_promtool)
    assert not both.failed and peak <= 2 and both.processes == 2 == len(processes)
    assert sorted(a.split("/group-")[0] for p in processes for a in p) == tests  # each group once
    # Balanced by steps: the 300m file alone on one process, the other four on the other.
    steps = {f"e{i}/t.test.yaml": m for i, m in enumerate(lasts)}
    loads = sorted(sum(steps[a.split("/group-")[0]] for a in p) for p in processes)
    assert loads == [215, 300]


def test_a_failure_in_a_shared_process_is_reported_only_for_its_file(tmp_path: Path, promtool: str) -> None:
    work = tmp_path / "rendered"
    tests = write_suite(work, {"dev/good.test.yaml": GOOD.format(last="5m"), "prod/bad.test.yaml": BAD})
    run = pt.run_tests(promtool, tests, work, workers=1)
    assert run.processes == 1
    assert [(f.path, f.passed) for f in run.files] == [("dev/good.test.yaml", True), ("prod/bad.test.yaml", False)]
    bad = run.files[1].output
    assert bad.startswith("Unit Testing:  prod/bad.test.yaml/group-1-of-1.yaml") and "good" not in bad, bad


def test_estimated_steps_follow_eval_times_and_interval(tmp_path: Path) -> None:
    f = tmp_path / "t.test.yaml"
    f.write_text(GOOD.format(last="1h30m").replace("evaluation_interval: 1m", "evaluation_interval: 30s"))
    assert pt.estimated_steps(f) == 90 * 2 + 1
    f.write_text("tests: [")  # unreadable: no estimate, and never reused
    assert pt.estimated_steps(f) == 0.0 and pt.rule_files(f) is None


def test_passes_not_reused_for_a_month_are_forgotten(tmp_path: Path, promtool: str) -> None:
    work, cache = tmp_path / "rendered", tmp_path / "cache"
    tests = write_suite(work, {"dev/good.test.yaml": GOOD.format(last="5m")})
    pt.run_tests(promtool, tests, work, cache=cache)
    (entry,) = list(cache.iterdir())
    old = entry.stat().st_mtime - pt.CACHE_MAX_AGE_S - 60
    os.utime(entry, (old, old))
    assert pt.run_tests(promtool, tests, work, cache=cache).reused == 1  # reusing it renews it
    stale = cache / ("0" * 64)
    stale.write_text("{}\n")
    os.utime(stale, (old, old))
    (work / "dev/rules.yaml").write_text(RULES.replace("> 10", "> 5"))  # still passes: a new pass is written
    pt.run_tests(promtool, tests, work, cache=cache)
    assert entry.exists() and not stale.exists() and len(list(cache.iterdir())) == 2


def test_on_start_runs_once_after_the_split_as_promtool_starts(tmp_path: Path, promtool: str) -> None:
    # render starts its Python checks at on_start: not before the group split and the promtool
    # processes (they would delay both on the GIL); never when every file is reused.
    work, cache = tmp_path / "rendered", tmp_path / "cache"
    tests = write_suite(
        work, {"dev/good.test.yaml": GOOD.format(last="5m"), "prod/other.test.yaml": GOOD.format(last="9m")}
    )
    events: list[str] = []

    def real_promtool(argv: list[str], cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        events.append("promtool: group files written" if all((cwd / a).is_file() for a in argv[3:]) else "promtool")
        return subprocess.run(argv, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    one = pt.run_tests(promtool, tests, work, workers=1, runner=real_promtool, on_start=lambda: events.append("start"))
    assert not one.failed and events == ["start", "promtool: group files written"]
    events.clear()
    # The default runner: once, when both processes exist.
    both = pt.run_tests(promtool, tests, work, cache=cache, workers=2, on_start=lambda: events.append("start"))
    assert not both.failed and both.processes == 2 and events == ["start"]
    events.clear()
    assert pt.run_tests(promtool, tests, work, cache=cache, on_start=lambda: events.append("start")).reused == 2
    assert events == []
