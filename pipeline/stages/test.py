"""`test`: ruff, ruff format --check, mypy, pytest (unit), Rego tests, chart lint. Results in JUnit.

Runs against `--root` (default: this repository) so the stage can be exercised on a tiny
fixture project from the test suite without recursing into the suite itself.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checks import run_command
from pipeline.context import RunContext
from pipeline.result import Check, StageResult, Status, Timer
from pipeline.tools import find

log = logging.getLogger(__name__)

NAME = "test"
HELP = "ruff, ruff format --check, mypy, pytest (unit), Rego tests, helm lint; JUnit in the run dir"
CHECKS = ("ruff", "format", "mypy", "pytest", "rego", "chart")
# What the result depends on (for the ci cache); tool identities are added by ci.
CACHE_INPUTS = ("app", "pipeline", "tests", "policies", "charts", "loadtests", "pyproject.toml", "uv.lock")
CACHE_TOOLS = ("ruff", "mypy", "helm")


@dataclass
class TestOptions:
    __test__ = False  # not a pytest test class despite the name

    root: Path | None = None
    markers: str = "not slow"
    pytest_args: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, help="project to test (default: this repository)")
    parser.add_argument("--markers", default="not slow", help="pytest -m expression (default: 'not slow')")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, one shell-quoted string")
    parser.add_argument("--skip", action="append", default=[], choices=CHECKS, help="skip a check (repeatable)")


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    return run(
        TestOptions(root=args.root, markers=args.markers, pytest_args=shlex.split(args.pytest_args), skip=args.skip),
        ctx,
    )


def _junit_numbers(path: Path) -> dict[str, float]:
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - our own pytest's output
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = {"tests": 0.0, "failures": 0.0, "errors": 0.0, "skipped": 0.0}
    for s in suites:
        for k in out:
            out[k] += float(s.get(k, 0) or 0)
    return out


def _rego_check(root: Path) -> Check:
    """Delegate to the policy module's test runner (owned by the chart/policy work)."""
    if not any((root / "policies").glob("**/*.rego")):
        return Check(name="rego", status=Status.SKIPPED, detail="no policies/*.rego in this project")
    try:
        policy = importlib.import_module("pipeline.policy")
    except ModuleNotFoundError:
        return Check(
            name="rego", status=Status.SKIPPED, detail="pipeline.policy (Rego test runner) not implemented yet"
        )
    runner = next(
        (getattr(policy, n) for n in ("run_tests", "test_policies", "run_policy_tests") if hasattr(policy, n)), None
    )
    if runner is None:
        return Check(name="rego", status=Status.SKIPPED, detail="pipeline.policy exposes no run_tests()")
    with Timer() as t:
        try:
            outcome: Any = runner(root / "policies")
        except Exception as exc:  # the runner is another module: report, don't crash the stage
            log.exception("policy test runner failed")
            return Check(name="rego", status=Status.FAILED, detail=f"policy test runner raised: {exc}")
    return _coerce_check("rego", outcome, t.seconds)


def _coerce_check(name: str, outcome: Any, seconds: float) -> Check:
    """Accept a Check, a StageResult, a list of Checks or a bool from a delegated runner."""
    if isinstance(outcome, Check):
        return outcome.model_copy(update={"name": name, "seconds": outcome.seconds or seconds})
    if isinstance(outcome, StageResult):
        failed = outcome.failures()
        detail = "; ".join(f"{c.name}: {c.detail}" for c in failed) or outcome.summary
        return Check(name=name, status=outcome.status, detail=detail, seconds=seconds)
    if isinstance(outcome, list) and all(isinstance(c, Check) for c in outcome):
        failed = [c for c in outcome if c.status is Status.FAILED]
        status = Status.FAILED if failed else Status.PASSED
        detail = "; ".join(f"{c.name}: {c.detail}" for c in failed) or f"{len(outcome)} policy tests passed"
        return Check(name=name, status=status, detail=detail, seconds=seconds, numbers={"tests": len(outcome)})
    ok = bool(outcome)
    return Check(
        name=name, status=Status.PASSED if ok else Status.FAILED, detail="" if ok else "failed", seconds=seconds
    )


def _chart_checks(root: Path, log_dir: Path) -> list[Check]:
    charts = sorted(p.parent for p in (root / "charts").glob("*/Chart.yaml"))
    if not charts:
        return [Check(name="chart", status=Status.SKIPPED, detail="no charts/*/Chart.yaml in this project")]
    helm = find("helm")
    if helm is None:
        return [Check(name="chart", status=Status.SKIPPED, detail="helm not installed (`make tools`)")]
    checks = []
    for chart in charts:
        check, _ = run_command(
            f"helm lint {chart.name}", [helm, "lint", "--strict", str(chart)], cwd=root, log_dir=log_dir
        )
        checks.append(check)
    return checks


def run(opts: TestOptions, ctx: RunContext) -> StageResult:
    root = (opts.root or ctx.repo_root).resolve()
    out = ctx.run_dir / NAME
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    checks: list[Check] = []
    with Timer() as total:
        steps: list[tuple[str, list[str]]] = [
            ("ruff", [py, "-m", "ruff", "check", "--no-cache", "."]),
            ("format", [py, "-m", "ruff", "format", "--check", "--no-cache", "."]),
            ("mypy", [py, "-m", "mypy"]),
        ]
        for name, argv in steps:
            if name in opts.skip:
                checks.append(Check(name=name, status=Status.SKIPPED, detail="skipped by --skip"))
                continue
            ctx.progress(f"test: {name}")
            checks.append(run_command(name, argv, cwd=root, log_dir=out)[0])
        if "pytest" in opts.skip:
            checks.append(Check(name="pytest", status=Status.SKIPPED, detail="skipped by --skip"))
        else:
            ctx.progress(f"test: pytest -m {opts.markers!r}")
            junit = out / "pytest-junit.xml"
            argv = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", opts.markers, f"--junitxml={junit}"]
            check, _ = run_command("pytest", [*argv, *opts.pytest_args], cwd=root, log_dir=out)
            check.numbers = _junit_numbers(junit)
            if check.numbers:
                n = check.numbers
                check.detail = (
                    f"{n['tests']:.0f} tests, {n['failures'] + n['errors']:.0f} failed, {n['skipped']:.0f} skipped; "
                    + check.detail
                )
            checks.append(check)
        if "rego" in opts.skip:
            checks.append(Check(name="rego", status=Status.SKIPPED, detail="skipped by --skip"))
        else:
            checks.append(_rego_check(root))
        if "chart" in opts.skip:
            checks.append(Check(name="chart", status=Status.SKIPPED, detail="skipped by --skip"))
        else:
            checks.extend(_chart_checks(root, out))
    failed = [c.name for c in checks if c.status is Status.FAILED]
    summary = (
        f"failed: {', '.join(failed)}" if failed else f"{sum(c.status is Status.PASSED for c in checks)} checks passed"
    )
    artifacts = [str(p) for p in sorted(out.glob("*.xml"))]
    return StageResult.from_checks(
        NAME, checks, summary=summary, seconds=total.seconds, logs=str(out), artifacts=artifacts
    )
