"""Evaluate Rego v1 policies with a real engine (regorus) and run their unit tests.

Conventions (conftest/OPA compatible): `package main`, `deny contains msg if { ... }`,
parameters from `data.params`, each `x.rego` beside `x_test.rego` with `test_*` rules.

    evaluate(["policies/manifests", "policies/lib"], input_doc, {"params": {...}}) -> ["msg", ...]
    evaluate("policies/promotion.rego", as_json(request), as_json(data))  # one file, any object
    run_tests("policies") -> list[TestOutcome]        # every *_test.rego, grouped by directory
    missing_tests("policies") -> ["policies/x.rego has no policies/x_test.rego", ...]
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regorus

PolicySource = str | Path

_PACKAGE_RE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_TEST_RULE_RE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


class PolicyError(RuntimeError):
    """A policy failed to parse or evaluate; the message names the file or query."""


def _clean(exc: BaseException) -> str:
    """regorus errors carry a Rust backtrace after the message: keep the message."""
    return str(exc).split("Stack backtrace:")[0].strip()


def as_json(value: Any) -> Any:
    """`value` as plain JSON types (dates, paths, enums → strings), as a Rego engine expects its input/data."""
    return json.loads(json.dumps(value, default=str))


def policy_files(sources: Iterable[PolicySource], *, include_tests: bool = False) -> list[Path]:
    """Expand files and directories (non-recursive) into a sorted list of .rego files."""
    files: list[Path] = []
    for src in sources:
        path = Path(src)
        candidates = sorted(path.glob("*.rego")) if path.is_dir() else [path]
        for f in candidates:
            if include_tests or not f.name.endswith("_test.rego"):
                files.append(f)
    return files


def compile_engine(
    sources: Iterable[PolicySource], data: Mapping[str, Any] | None = None, *, include_tests: bool = False
) -> regorus.Engine:
    """An engine loaded with the policies (tests only with include_tests) and data."""
    engine = regorus.Engine()
    for f in policy_files(sources, include_tests=include_tests):
        try:
            engine.add_policy(str(f), f.read_text())
        except Exception as exc:  # regorus raises plain RuntimeError/ValueError
            raise PolicyError(f"{f}: {_clean(exc)}") from exc
    if data:
        engine.add_data(dict(data))
    return engine


def evaluate_engine(engine: regorus.Engine, input_doc: Any, query: str = "data.main.deny") -> list[str]:
    """Evaluate `query` (a set/array of messages) on a compiled engine; undefined = no messages."""
    engine.set_input(input_doc)
    try:
        result = engine.eval_rule(query)
    except Exception as exc:
        raise PolicyError(f"{query}: {_clean(exc)}") from exc
    if result is None:
        return []
    if isinstance(result, (set, list, tuple, frozenset)):
        return sorted(str(m) for m in result)
    raise PolicyError(f"{query} returned {type(result).__name__}, expected a set of messages")


def evaluate(
    sources: PolicySource | Sequence[PolicySource],
    input_doc: Any,
    data: Mapping[str, Any] | None = None,
    query: str = "data.main.deny",
) -> list[str]:
    """Messages produced by `query` for `input_doc`; `sources` are .rego files or directories."""
    srcs: Sequence[PolicySource] = [sources] if isinstance(sources, (str, Path)) else sources
    return evaluate_engine(compile_engine(srcs, data), input_doc, query)


@dataclass(frozen=True)
class TestOutcome:
    """One `test_*` rule: where it lives and whether it evaluated to true."""

    file: Path
    rule: str
    passed: bool
    detail: str = ""

    @property
    def name(self) -> str:
        return f"{self.file}:{self.rule}"


def _test_rules(path: Path) -> tuple[str, list[str]]:
    text = path.read_text()
    pkg = _PACKAGE_RE.search(text)
    if not pkg:
        raise PolicyError(f"{path}: no package declaration")
    return pkg.group(1), _TEST_RULE_RE.findall(text)


def run_tests(root: PolicySource, lib_dirs: Sequence[PolicySource] = ()) -> list[TestOutcome]:
    """Run every `test_*` rule of every *_test.rego under root.

    Each directory is its own bundle (its policies + tests + `lib_dirs`, default `<root>/lib`),
    so `deny` rules of unrelated policy sets (e.g. promotion vs manifests) never mix.
    """
    root = Path(root)
    libs = [Path(p) for p in lib_dirs] or ([root / "lib"] if (root / "lib").is_dir() else [])
    outcomes: list[TestOutcome] = []
    dirs = sorted({p.parent for p in root.rglob("*_test.rego")})
    for d in dirs:
        bundle = policy_files([d], include_tests=True)
        for lib in libs:
            if lib.resolve() != d.resolve():
                bundle += policy_files([lib], include_tests=False)
        try:
            engine = compile_engine(bundle, include_tests=True)
        except PolicyError as exc:
            outcomes.append(TestOutcome(d, "<compile>", False, str(exc)))
            continue
        for test_file in sorted(d.glob("*_test.rego")):
            pkg, rules = _test_rules(test_file)
            if not rules:
                outcomes.append(TestOutcome(test_file, "<none>", False, "no test_* rules"))
            for rule in rules:
                try:
                    value = engine.eval_rule(f"data.{pkg}.{rule}")
                    outcomes.append(
                        TestOutcome(test_file, rule, value is True, "" if value is True else f"= {value!r}")
                    )
                except Exception as exc:
                    outcomes.append(TestOutcome(test_file, rule, False, _clean(exc)))
    return outcomes


def missing_tests(root: PolicySource) -> list[str]:
    """Policies without a sibling `x_test.rego` that defines at least one `test_*` rule."""
    problems: list[str] = []
    for policy in sorted(Path(root).rglob("*.rego")):
        if policy.name.endswith("_test.rego"):
            continue
        test = policy.with_name(policy.stem + "_test.rego")
        if not test.is_file():
            problems.append(f"policy {policy} has no test file {test.name}")
        elif not _TEST_RULE_RE.search(test.read_text()):
            problems.append(f"policy {policy}: {test.name} defines no test_* rules")
    return problems


_VIOLATION_RULE_RE = re.compile(r"^(\w+)_violations\s+contains\b", re.MULTILINE)


def violation_rules(sources: Iterable[PolicySource]) -> list[str]:
    """Names `<x>` of the `<x>_violations` set rules the policies define (one per policy file)."""
    names: set[str] = set()
    for f in policy_files(sources):
        names.update(_VIOLATION_RULE_RE.findall(f.read_text()))
    return sorted(names)


def evaluate_by_rule(
    engine: regorus.Engine, input_doc: Any, rules: Iterable[str], package: str = "data.main"
) -> dict[str, list[str]]:
    """Messages per policy: `<package>.<x>_violations` for each x in `rules`, keyed by x.

    Lets callers say which policy produced a message (`policy images: ...`) while conftest/OPA
    users still evaluate the aggregated `deny`. Rules are evaluated one by one: evaluating the
    whole package as one query is not reliable in regorus 0.13 (it returned empty sets).
    """
    out: dict[str, list[str]] = {}
    engine.set_input(input_doc)
    for rule in rules:
        query = f"{package}.{rule}_violations"
        try:
            value = engine.eval_rule(query)
        except Exception as exc:
            raise PolicyError(f"{query}: {_clean(exc)}") from exc
        out[rule] = sorted(str(m) for m in (value or []))
    return out


def load_params(params_file: Path, target: str) -> dict[str, Any]:
    """data.params for one target: `defaults` overlaid with `environments.<target>`, plus `env`."""
    import yaml

    doc = yaml.safe_load(params_file.read_text()) or {}
    params = dict(doc.get("defaults") or {})
    params.update((doc.get("environments") or {}).get(target) or {})
    params["env"] = target
    return params
