"""`promtool test rules` over many test files: one process per file, at most one per core, the
most expensive files first; each test group runs as a file of its own against only the rules its
assertions read (pipeline.checks.promtool_subset); a file that passed is not run again while it,
the rule files it names and promtool itself are byte-for-byte unchanged.

Why: promtool runs its files and their test groups one after another on one core, and a test
group re-evaluates every rule of its rule files at each evaluation_interval step up to its last
eval_time (the 6 h SLO windows made the SLO file about 3.5 s of CPU per env; its groups on the
rules they read take about 1.3 s).
Every case of every file still runs whenever its inputs change; a reused pass is reported as
such, failures are never reused. Each failure names its file and test group (promtool's `Unit
Testing: <file>/group-<i>-of-<n>.yaml` header) and, in promtool's own words, the failing test
(alertname or expression, eval time, group name when it has one).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.checks.promtool_subset import load_yaml, split
from pipeline.core.result import Timer

# promtool's default when a test file sets no evaluation_interval (cmd/promtool/unittest.go).
DEFAULT_EVAL_INTERVAL_S = 60.0
CACHE_SCHEMA = 2  # 2: test groups run on their rule subsets
# Remembered passes not reused for this long are forgotten (each rule edit adds one per test file).
CACHE_MAX_AGE_S = 30 * 86400

Runner = Callable[[list[str], Path], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class FileResult:
    """One test file: passed or not, promtool's output for it, and whether this run executed it."""

    path: str  # as passed to promtool (relative to the working directory)
    passed: bool
    output: str
    seconds: float
    reused: bool = False


@dataclass(frozen=True)
class TestRun:
    files: list[FileResult]

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if not f.passed]

    @property
    def reused(self) -> int:
        return sum(f.reused for f in self.files)

    def report(self) -> str:
        """The failing files' reports, each headed by its path; passing files left out."""
        return "\n\n".join(f"{f.path}:\n{_failure_lines(f.output)}" for f in self.failed)

    def summary(self) -> str:
        ran = len(self.files) - self.reused
        text = f"{len(self.files)} test files ({ran} run"
        return text + (
            f", {self.reused} passed before with identical tests, rules and promtool)" if self.reused else ")"
        )


def _failure_lines(output: str) -> str:
    """promtool's `Unit Testing: <file>` sections that did not succeed (all of its output if it
    failed before any), at most 4000 characters each."""
    sections = [s for s in re.split(r"(?m)^(?=Unit Testing:)", output.strip()) if s.strip()]
    failed = [s.strip()[-4000:] for s in sections if s.startswith("Unit Testing:") and "FAILED" in s]
    return "\n".join(failed) if failed else output.strip()[-4000:]


def _duration_seconds(value: Any, default: float) -> float:
    """A Prometheus duration (`90m`, `1h30m`, `7h`) in seconds; `default` when absent or unreadable."""
    if value in (None, ""):
        return default
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, number, i, text = 0.0, "", 0, str(value)
    while i < len(text):
        ch = text[i]
        if ch.isdigit():
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if not number or unit not in units:
            return default
        total += int(number) * units[unit]
        number, i = "", i + len(unit)
    return default if number else total


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = load_yaml(path)
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def estimated_steps(path: Path) -> float:
    """Rule evaluations promtool will do for `path`: each test group evaluates from 0 to its last
    eval_time at the file's evaluation_interval (what its run time grows with). 0 if unreadable."""
    data = _load(path)
    if data is None:
        return 0.0
    interval = _duration_seconds(data.get("evaluation_interval"), DEFAULT_EVAL_INTERVAL_S) or DEFAULT_EVAL_INTERVAL_S
    steps = 0.0
    for group in data.get("tests") or []:
        if not isinstance(group, dict):
            continue
        cases = [*(group.get("alert_rule_test") or []), *(group.get("promql_expr_test") or [])]
        last = max((_duration_seconds(c.get("eval_time"), 0.0) for c in cases if isinstance(c, dict)), default=0.0)
        steps += last / interval + 1
    return steps


def rule_files(path: Path) -> list[Path] | None:
    """The rule files a test file names, resolved and globbed as promtool does (relative to the
    test file's directory); None if the file cannot be read (then it is never reused)."""
    data = _load(path)
    if data is None:
        return None
    found: list[Path] = []
    for pattern in data.get("rule_files") or []:
        full = pattern if os.path.isabs(str(pattern)) else str(path.parent / str(pattern))
        found += [Path(p) for p in sorted(glob.glob(full))]
    return found


def promtool_identity(promtool: str) -> str:
    """Path, size and mtime of the binary: changes whenever promtool does (cheaper than --version)."""
    st = Path(promtool).stat()
    return f"{Path(promtool).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(test_file: Path, promtool: str) -> str | None:
    """sha256 over promtool's identity, the test file and the content of each rule file it names."""
    files = rule_files(test_file)
    if files is None:
        return None
    h = hashlib.sha256(f"promtool-tests/{CACHE_SCHEMA}\0{promtool_identity(promtool)}\0".encode())
    for f in [test_file, *files]:
        try:
            content = f.read_bytes()
        except OSError:
            return None
        h.update(f"{len(content)}\0".encode() + content)
    return h.hexdigest()


def forget_unused(cache: Path, max_age_s: float) -> None:
    """Remove remembered passes not written or reused within `max_age_s`."""
    cutoff = time.time() - max_age_s
    for entry in cache.iterdir():
        with contextlib.suppress(OSError):  # another render may remove it first
            if entry.stat().st_mtime < cutoff:
                entry.unlink()


def _default_runner(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # One stream keeps promtool's `Unit Testing:` header next to its failures.
    return subprocess.run(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False
    )


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def run_tests(
    promtool: str,
    tests: Sequence[str],
    cwd: Path,
    *,
    cache: Path | None = None,
    workers: int | None = None,
    runner: Runner = _default_runner,
) -> TestRun:
    """`promtool test rules` on each of `tests` (paths relative to cwd), in parallel.

    cache: directory remembering passes (None: nothing reused, nothing stored).
    """
    keys = {t: cache_key(cwd / t, promtool) if cache else None for t in tests}
    results: dict[str, FileResult] = {}
    todo: list[str] = []
    for t in tests:
        key = keys[t]
        if cache is not None and key and (cache / key).is_file():
            (cache / key).touch()  # still in use: not forgotten
            results[t] = FileResult(t, passed=True, output="", seconds=0.0, reused=True)
        else:
            todo.append(t)
    # Longest first: with one process per core the slowest file must not start last.
    todo.sort(key=lambda t: -estimated_steps(cwd / t))

    def one(test: str, scratch: Path) -> FileResult:
        with Timer() as timer:
            files = rule_files(cwd / test)
            inside = not Path(test).is_absolute() and ".." not in Path(test).parts
            # promtool resolves each group file's rule files relative to it, inside `scratch`.
            groups = split(cwd / test, files, scratch / test, scratch) if files is not None and inside else None
            if groups is None:
                proc = runner([promtool, "test", "rules", test], cwd)
            else:
                proc = runner([promtool, "test", "rules", *(g.path for g in groups)], scratch)
        return FileResult(test, proc.returncode == 0, proc.stdout or "", timer.seconds)

    if todo:
        with (
            tempfile.TemporaryDirectory(prefix="promtool-tests-") as scratch,
            ThreadPoolExecutor(max_workers=min(len(todo), workers or default_workers())) as pool,
        ):
            for res in pool.map(lambda t: one(t, Path(scratch)), todo):
                results[res.path] = res
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for t in todo:
            key = keys[t]
            if key and results[t].passed:
                tmp = cache / f".{key}.{os.getpid()}"
                tmp.write_text(json.dumps({"file": t, "seconds": round(results[t].seconds, 3)}) + "\n")
                tmp.replace(cache / key)  # atomic: a reader never sees half a record
        forget_unused(cache, CACHE_MAX_AGE_S)
    return TestRun([results[t] for t in tests])
