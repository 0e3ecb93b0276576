"""What the suite's end-of-run check (tests/conftest.py) finds and stops: processes carrying its mark,
detached ones included, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

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
