"""`test`: ruff, ruff format --check, mypy, pytest (unit), Rego tests, chart lint. Results in JUnit.

Runs against `--root` (default: this repository) so the stage can be exercised on a tiny
fixture project from the test suite without recursing into the suite itself.

Evidence subject (`evidence.subject`): the tree it tested — `commit`, `dirty` and the
build-context `content_digests` of `--root` (pipeline.gitops.evidence.source_subject). Promotion
policy matches it on the commit the release was built from (`subject_match.test: commit`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checks import policy
from pipeline.core.cache import TRACKED, Extra
from pipeline.core.context import RunContext
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.core.shell import run_command
from pipeline.runtime.tools import find

log = logging.getLogger(__name__)

NAME = "test"
HELP = "ruff, ruff format --check, mypy, pytest (unit), Rego tests, helm lint; JUnit in the run dir"
CHECKS = ("ruff", "format", "mypy", "pytest", "rego", "chart")
# What the result depends on (for the ci cache): the unit tests may read any file of the tree
# (docs, environments, Makefile, ...), so every file git knows; tool identities are added by ci.
CACHE_INPUTS = (TRACKED,)
# ... but app/model.yaml: the suite runs on the example record (example_tree), so a model-only
# change re-runs the stages that read the record (build, scan, smoke, eval, loadtest), not the suite.
CACHE_EXCLUDE = ("app/model.yaml",)
CACHE_TOOLS = ("ruff", "mypy", "helm", "hadolint", "trivy", "promtool")
# The CRD schemas the suites validate against live outside the tree (tests/conftest.py).
CRD_SCHEMAS_TEST_ENV = "CRD_SCHEMA_LOCATION"


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


def cache_extra(opts: TestOptions | argparse.Namespace, root: Path) -> Extra:
    """A CRD schema directory the suites were pointed at outside the tree (the default copy is tracked)."""
    override = os.environ.get(CRD_SCHEMAS_TEST_ENV)
    paths = (override,) if override and Path(override).is_dir() else ()
    return Extra(paths=paths, facts={CRD_SCHEMAS_TEST_ENV: override or ""})


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
    """Run every `test_*` rule (pipeline.checks.policy) and require a test file for every policy.

    FAILED when a Rego test fails (each named with file and rule), when a policy has no
    `x_test.rego` with at least one `test_*` rule, or when policies exist but define no tests.
    """
    policies = root / "policies"
    if not any(policies.glob("**/*.rego")):
        return Check(name="rego", status=Status.SKIPPED, detail="no policies/*.rego in this project")
    with Timer() as t:
        try:
            outcomes = policy.run_tests(policies)
            missing = policy.missing_tests(policies)
        except Exception as exc:  # a policy that does not parse is a failed check, not a crashed stage
            log.exception("policy test runner failed")
            return Check(name="rego", status=Status.FAILED, detail=f"policy test runner raised: {exc}")
    return rego_verdict(outcomes, missing, t.seconds)


def rego_verdict(outcomes: list[policy.TestOutcome], missing: list[str], seconds: float = 0.0) -> Check:
    """The `rego` check from the runner's outcomes and the policies lacking tests."""
    failed = [f"{o.name} {o.detail}".strip() for o in outcomes if not o.passed]
    problems = [*(f"failed: {f}" for f in failed), *missing]
    if not outcomes and not missing:
        problems.append("policies exist but no *_test.rego defines a test_* rule")
    numbers = {"tests": float(len(outcomes)), "failed": float(len(failed)), "untested_policies": float(len(missing))}
    if problems:
        return Check(name="rego", status=Status.FAILED, detail="; ".join(problems), seconds=seconds, numbers=numbers)
    return Check(
        name="rego",
        status=Status.PASSED,
        detail=f"{len(outcomes)} Rego tests passed; every policy has tests",
        seconds=seconds,
        numbers=numbers,
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


# The organisation the test suite's expectations are written for (the repository as shipped).
EXAMPLE_PLATFORM = Path("tests/example-platform.yaml")
# The model record the suite's expectations are written for; app/model.yaml changes release by
# release (a new revision, stand-in recipe, serving arguments) and is gated by eval, not by the suite.
MODEL_RECORD = Path("app/model.yaml")
EXAMPLE_MODEL = Path("tests/example-model.yaml")
# Not copied into the example tree: environments, caches and results of this machine.
# (.git is copied: tests read the checkout's git metadata, e.g. what is tracked or ignored.)
_NOT_COPIED = {".venv", ".tools", ".runs", ".cache", ".gitops", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


@contextlib.contextmanager
def example_tree(root: Path) -> Iterator[tuple[Path, str | None]]:
    """(where the suite runs, why not `root`): a tree whose platform.yaml is not the example
    organisation's (an adopter's) or whose app/model.yaml is not the example model record (a new
    model) is copied with the example's platform.yaml and model record and re-derived, so the
    tests and Rego tests assert the values they are written for; the tree's own values are
    checked by `render` and `init --check`, its model by `build`'s validation, smoke and `eval`.
    The copy is removed afterwards; it lives under a short temp path (tests bind AF_UNIX sockets
    inside it)."""
    platform, model = root / EXAMPLE_PLATFORM, root / EXAMPLE_MODEL
    other_platform = platform.is_file() and platform.read_text() != (root / "platform.yaml").read_text()
    other_model = model.is_file() and model.read_bytes() != _read_or_empty(root / MODEL_RECORD)
    if not (other_platform or other_model):
        yield root, None
        return
    with tempfile.TemporaryDirectory(prefix="llm-example-") as tmp:
        yield _copy_as_example(root, Path(tmp) / "tree", platform if other_platform else None, other_model)


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _copy_as_example(root: Path, copy: Path, platform: Path | None, model: bool) -> tuple[Path, str]:
    from pipeline.core.platform import parse_platform
    from pipeline.platform_config.apply import apply

    shutil.copytree(
        root, copy, symlinks=True, ignore=lambda d, names: [n for n in names if Path(d) == root and n in _NOT_COPIED]
    )
    for shared in (".tools", ".venv"):  # the installed tools and venv, not copies of them
        if (root / shared).exists():
            (copy / shared).symlink_to(root / shared)
    why = []
    if model:
        shutil.copyfile(root / EXAMPLE_MODEL, copy / MODEL_RECORD)
        why.append(f"the example model record ({EXAMPLE_MODEL})")
    if platform is not None:
        text = platform.read_text()
        apply(copy, parse_platform(text, str(platform)), text)
        why.append(f"the example organisation ({EXAMPLE_PLATFORM})")
    return copy, f"tests ran on a copy re-derived for {' and '.join(why)}, whose values they assert"


def run(opts: TestOptions, ctx: RunContext) -> StageResult:
    root = (opts.root or ctx.repo_root).resolve()
    out = ctx.stage_dir(NAME)
    py = sys.executable
    checks: list[Check] = []
    with Timer() as total, example_tree(root) as (suite_root, substitution):
        if substitution:
            ctx.progress(f"test: {substitution}")
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
            argv += _parallel(opts.markers)
            check, _ = run_command("pytest", [*argv, *opts.pytest_args], cwd=suite_root, log_dir=out)
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
            checks.append(_rego_check(suite_root))
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
        NAME,
        checks,
        summary=summary,
        seconds=total.seconds,
        logs=str(out),
        artifacts=artifacts,
        evidence={
            "subject": tested_subject(root, opts),
            **({"substitutions": [substitution]} if substitution else {}),
        },
    )


def _parallel(markers: str) -> list[str]:
    """Unit tests on every core when pytest-xdist is there (1.5x here on 2 cores); the slow end-to-end
    tests share one container engine and the embedded registry, so any run that selects them stays serial."""
    import importlib.util

    return ["-n", "auto"] if markers == "not slow" and importlib.util.find_spec("xdist") else []


def rebind_cached(result: StageResult, root: Path) -> StageResult:
    """A result `ci` serves from its cache, for `root` as it is now. The key proved the suite's inputs
    identical (every file git knows but app/model.yaml, which the suite replaces by the example
    record; options; tools), so the subject names this tree's commit, dirty flag and build contexts
    and records the commit the suite ran on (`reused_from`)."""
    from pipeline.gitops.evidence import source_subject

    before = result.evidence.get("subject")
    if not isinstance(before, dict) or before.get("kind") != "source":
        return result
    extra = {k: v for k, v in before.items() if k not in {"kind", "commit", "dirty", "content_digests", "reused_from"}}
    subject = source_subject(root, "source", **extra)
    if (subject["commit"], subject["dirty"]) != (before.get("commit"), before.get("dirty")):
        subject["reused_from"] = {
            "commit": before.get("commit"),
            "dirty": before.get("dirty"),
            "why": "ci's cache: the same suite inputs (tracked files but app/model.yaml), options and tools",
        }
    return result.model_copy(update={"evidence": {**result.evidence, "subject": subject}})


def tested_subject(root: Path, opts: TestOptions) -> dict[str, Any]:
    """What this run tested: the source tree at `root` (commit, dirty flag, build-context digests)."""
    from pipeline.gitops.evidence import source_subject

    return source_subject(root, "source", tested=f"pytest -m {opts.markers!r}; skipped: {sorted(opts.skip)}")
