"""What the suite's end-of-run check (tests/conftest.py) finds and stops: processes carrying its mark,
detached ones included, and nothing else; and the check itself, in a pytest run of its own (with and
without xdist workers): a run that leaves a process fails naming it, and the process is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import suite_processes as sp

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def start(mark: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, sp.MARK_VAR: mark}
    # Detached, as the registry and daemons are: no longer this process's group.
    return subprocess.Popen(SLEEPER, env=env, start_new_session=True)


def test_a_detached_leftover_is_found_stopped_and_named_and_others_are_untouched() -> None:
    mine, other = uuid.uuid4().hex, uuid.uuid4().hex
    left, bystander = start(mine), start(other)
    try:
        assert set(sp.marked(mine)) == {left.pid}
        stopped = sp.stop_leftovers(mine, wait=0.3)
        assert len(stopped) == 1 and stopped[0].startswith(f"{left.pid}: ") and "time.sleep(60)" in stopped[0]
        assert left.wait(timeout=10) != 0  # terminated by a signal, not finished
        assert sp.marked(mine) == {}
        assert bystander.poll() is None and set(sp.marked(other)) == {bystander.pid}
    finally:
        for proc in (left, bystander):
            proc.kill()
            proc.wait(timeout=10)


def test_processes_that_exit_within_the_grace_period_are_not_reported() -> None:
    mark = uuid.uuid4().hex
    quick = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(0.5)"], env={**os.environ, sp.MARK_VAR: mark}
    )
    try:
        assert sp.stop_leftovers(mark, wait=10.0) == []
    finally:
        quick.wait(timeout=10)


def test_this_suite_marks_what_it_starts() -> None:
    # conftest.py's pytest_configure set the mark in this process: children inherit it.
    mark = os.environ[sp.MARK_VAR]
    child = subprocess.Popen(SLEEPER)
    try:
        assert child.pid in sp.marked(mark)
    finally:
        child.kill()
        child.wait(timeout=10)


# A test that starts a detached process and leaves it running, as a registry or daemon would.
LEAVES_ONE = """\
import os, subprocess, sys
def test_leaves_a_detached_sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    open(os.environ["LEFTOVER_PID_FILE"], "w").write(str(proc.pid))
"""
CLEAN = """\
import subprocess, sys
def test_waits_for_what_it_starts():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


def running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


# Slow: each leftover case waits out the check's grace period (10 s) before it stops the process.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "leaves"),
    [([], True), (["-n", "1"], True), ([], False)],
    ids=["leftover, one process", "leftover, xdist worker", "clean"],
)
def test_the_suites_own_end_of_run_check_fails_a_run_that_leaves_a_process_and_stops_it(
    tmp_path: Path, repo_root: Path, workers: list[str], leaves: bool
) -> None:
    # A pytest run of its own with this suite's conftest.py as a plugin (its end-of-run hook).
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(LEAVES_ONE if leaves else CLEAN)
    pid_file = tmp_path / "leftover.pid"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest"]
    argv += ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), *workers, str(tmp_path / "test_inner.py")]
    env = {**os.environ, "LEFTOVER_PID_FILE": str(pid_file)}
    run = subprocess.run(argv, cwd=repo_root, env=env, capture_output=True, text=True, timeout=120)
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    try:
        if not leaves:
            assert run.returncode == 0 and "leftover processes" not in run.stdout, run.stdout + run.stderr
            return
        assert pid is not None, run.stdout + run.stderr
        assert run.returncode == 1, run.stdout + run.stderr
        assert "leftover processes" in run.stdout and f"{pid}: " in run.stdout and "time.sleep(60)" in run.stdout
        deadline = time.monotonic() + 10
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(pid), f"the leftover {pid} survived the run that reported it"
    finally:
        if pid is not None and running(pid):
            os.kill(pid, signal.SIGKILL)
