"""`promtool test rules` over many test files: every test group runs as a file of its own against
only the rules its assertions read (pipeline.checks.promtool_subset), the groups of all files
spread over one promtool process per core, balanced by their evaluation steps; promtool's TSDBs
live in memory (memory_tmp); a file that passed is not run again while it, the rule files it
names and promtool itself are byte-for-byte unchanged.

Why: a test group re-evaluates its rules at each evaluation_interval step up to its last
eval_time, and each promtool process costs ~35 ms to start: one process per file (16 for three
envs) spent more on starting and on syncing its TSDBs to disk than on the small files' tests.
Every case of every file still runs whenever its inputs change; a reused pass is reported as
such, failures are never reused. Each failure names its file and test group (promtool's `Unit
Testing: <file>/group-<i>-of-<n>.yaml` header) and, in promtool's own words, the failing test
(alertname or expression, eval time, group name when it has one).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.checks.promtool_subset import load_yaml, split
from pipeline.core.cache import forget_unused
from pipeline.core.result import Timer

# promtool's default when a test file sets no evaluation_interval (cmd/promtool/unittest.go).
DEFAULT_EVAL_INTERVAL_S = 60.0
CACHE_SCHEMA = 2  # 2: test groups run on their rule subsets
# Remembered passes not reused for this long are forgotten (each rule edit adds one per test file).
CACHE_MAX_AGE_S = 30 * 86400
# A test group's fixed cost (its TSDB, loading its rules) in evaluation steps, for balancing.
GROUP_COST = 10.0
# Linux's shared-memory tmpfs: promtool's per-group TSDBs live there when it exists (memory_tmp).
MEMORY_TMP = Path("/dev/shm")  # noqa: S108 - only the parent of a private mkdtemp directory

Runner = Callable[[list[str], Path, Mapping[str, str]], "subprocess.CompletedProcess[str]"]


@dataclass(frozen=True)
class FileResult:
    """One test file: passed or not, promtool's output for it, and whether this run executed it."""

    path: str  # as passed to promtool (relative to the working directory)
    passed: bool
    output: str
    seconds: float  # wall time of the promtool process(es) its groups ran in, shared with other files
    reused: bool = False


@dataclass(frozen=True)
class TestRun:
    files: list[FileResult]
    processes: int = 0  # promtool processes this run started

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
        text = f"{len(self.files)} test files ({ran} run" + (
            f" in {self.processes} promtool process{'es' * (self.processes != 1)}" if ran else ""
        )
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


def _run_signalling(
    argv: list[str], cwd: Path, env: Mapping[str, str], spawned: Callable[[], None]
) -> subprocess.CompletedProcess[str]:
    """`_default_runner` that calls `spawned` as soon as the process exists (subprocess.run's
    timeout behaviour: kill, wait, raise)."""
    with subprocess.Popen(
        argv, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        spawned()
        try:
            output, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, output)


def _default_runner(argv: list[str], cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    # One stream keeps promtool's `Unit Testing:` header next to its failures.
    return subprocess.run(
        argv,
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def memory_tmp() -> str | None:
    """A memory-backed directory for the scratch files and promtool's TSDBs (None: the default
    temporary directory). promtool opens a TSDB per test group under $TMPDIR and syncs it to
    disk; on a busy disk that waiting was half of its wall time."""
    return str(MEMORY_TMP) if MEMORY_TMP.is_dir() and os.access(MEMORY_TMP, os.W_OK | os.X_OK) else None


@dataclass(frozen=True)
class _Unit:
    """What one promtool argument runs: a group file (relative to the scratch directory) or, when a
    test file cannot be split, the test file itself (relative to cwd, in a process of its own)."""

    test: str
    arg: str
    cost: float
    whole: bool = False


# A process: the units it ran, promtool's exit and output, its wall seconds.
_Ran = tuple[list[_Unit], "subprocess.CompletedProcess[str]", float]


def _plan(units: list[_Unit], processes: int) -> list[list[_Unit]]:
    """Group files into at most `processes` balanced processes (longest first onto the least
    loaded: every process ends within one group's cost of the others); whole files alone."""
    bins: list[list[_Unit]] = [[] for _ in range(max(1, processes))]
    load = [0.0] * len(bins)
    for u in sorted((u for u in units if not u.whole), key=lambda u: -u.cost):
        i = load.index(min(load))
        bins[i].append(u)
        load[i] += u.cost
    plan = [b for b in bins if b] + [[u] for u in units if u.whole]
    # Each process runs its groups in test-file order (a readable report); the heaviest starts first.
    order = {u: n for n, u in enumerate(units)}
    return sorted((sorted(b, key=order.__getitem__) for b in plan), key=lambda b: -sum(u.cost for u in b))


def _sections(output: str) -> dict[str, str]:
    """promtool's `Unit Testing:  <file>` sections by file."""
    found = {}
    for s in re.split(r"(?m)^(?=Unit Testing:)", output):
        head, _, _ = s.partition("\n")
        if head.startswith("Unit Testing:"):
            found[head.removeprefix("Unit Testing:").strip()] = s.strip()
    return found


def _passed(section: str | None) -> bool:
    """A section that reports its file passed, and nothing else."""
    return section is not None and section.splitlines()[1:] == ["  SUCCESS"]


def run_tests(
    promtool: str,
    tests: Sequence[str],
    cwd: Path,
    *,
    cache: Path | None = None,
    workers: int | None = None,
    runner: Runner = _default_runner,
    on_start: Callable[[], None] | None = None,
) -> TestRun:
    """`promtool test rules` on each of `tests` (paths relative to cwd): their test groups spread
    over at most `workers` processes (default: the cores), each on the rules it reads.

    cache: directory remembering passes (None: nothing reused, nothing stored).
    on_start: called once every promtool process has started (with an injected runner: as the
    last is handed to it), so the caller's Python work cannot delay their start on the GIL; not
    called when every file is reused.
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

    ran: list[_Ran] = []
    if todo:
        with tempfile.TemporaryDirectory(prefix="promtool-tests-", dir=memory_tmp()) as tmp:
            scratch, tsdb = Path(tmp) / "tests", Path(tmp) / "tsdb"
            tsdb.mkdir()
            units: list[_Unit] = []
            for t in todo:
                files = rule_files(cwd / t)
                inside = not Path(t).is_absolute() and ".." not in Path(t).parts
                # promtool resolves each group file's rule files relative to it, inside `scratch`.
                groups = split(cwd / t, files, scratch / t, scratch) if files is not None and inside else None
                if groups is None:
                    units.append(_Unit(t, t, GROUP_COST + estimated_steps(cwd / t), whole=True))
                else:
                    units += [_Unit(t, g.path, GROUP_COST + estimated_steps(scratch / g.path)) for g in groups]
            plan = _plan(units, min(len(todo), workers or default_workers()))
            env = {**os.environ, "TMPDIR": str(tsdb)}
            waiting = [len(plan)]
            lock = threading.Lock()

            def spawned() -> None:
                with lock:
                    waiting[0] -= 1
                    last = waiting[0] == 0
                if last and on_start is not None:
                    on_start()

            def one(batch: list[_Unit]) -> _Ran:
                with Timer() as timer:
                    where = cwd if batch[0].whole else scratch
                    argv = [promtool, "test", "rules", *(u.arg for u in batch)]
                    if runner is _default_runner:
                        proc = _run_signalling(argv, where, env, spawned)
                    else:
                        spawned()
                        proc = runner(argv, where, env)
                return batch, proc, timer.seconds

            with ThreadPoolExecutor(max_workers=min(len(plan), workers or default_workers())) as pool:
                ran = list(pool.map(one, plan))
        results |= _results(todo, ran)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for t in todo:
            key = keys[t]
            if key and results[t].passed:
                tmp_entry = cache / f".{key}.{os.getpid()}"
                tmp_entry.write_text(json.dumps({"file": t, "seconds": round(results[t].seconds, 3)}) + "\n")
                tmp_entry.replace(cache / key)  # atomic: a reader never sees half a record
        forget_unused(cache, CACHE_MAX_AGE_S)
    return TestRun([results[t] for t in tests], processes=len(ran))


def _results(todo: list[str], ran: list[_Ran]) -> dict[str, FileResult]:
    """Each test file's result from the processes its groups ran in: passed only if every group
    of it reported SUCCESS (or its process passed as a whole); its output is its groups' sections,
    or all of a process's output when promtool stopped before reporting a group."""
    passed = dict.fromkeys(todo, True)
    parts: dict[str, list[str]] = {t: [] for t in todo}
    seconds = dict.fromkeys(todo, 0.0)
    for batch, proc, secs in ran:
        output = proc.stdout or ""
        sections = _sections(output)
        for u in batch:
            seconds[u.test] = max(seconds[u.test], secs)
            section = sections.get(u.arg)
            if proc.returncode == 0 and not u.whole:
                parts[u.test].append(section or "")
            elif u.whole:
                passed[u.test] &= proc.returncode == 0
                parts[u.test].append(output)
            else:
                passed[u.test] &= _passed(section)
                parts[u.test].append(section if section is not None else output)
    return {t: FileResult(t, passed[t], "\n\n".join(dict.fromkeys(p for p in parts[t] if p)), seconds[t]) for t in todo}
