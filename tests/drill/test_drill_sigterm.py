"""A canary drill stopped by SIGTERM mid-run (what canary_gate does at its timeout, to the drill's process
group) stops every process it started: HAProxy, Prometheus, Alertmanager, Locust and the model pods run
in sessions of their own, which that signal does not reach. Real drill, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.gitops.repo import ensure_local_remote
from tests.helpers.suite_processes import MARK_VAR, marked, stop_leftovers

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_sigterm_mid_drill_leaves_no_process(tmp_path: Path) -> None:
    mark = f"drill-sigterm-{uuid.uuid4().hex[:8]}"
    remote = ensure_local_remote(tmp_path / "gitops.git", REPO)
    argv = [sys.executable, "-m", "pipeline", "--run-dir", str(tmp_path / "run"), "drill", "--canary"]
    argv += ["--fault", "none", "--processes", "--json", "--gitops-repo", str(remote)]
    log = tmp_path / "drill.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            argv, cwd=REPO, env={**os.environ, MARK_VAR: mark}, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "setWeight" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert len(marked(mark)) > 3  # the drill's servers, Prometheus, HAProxy, Locust are up
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        left = stop_leftovers(mark, wait=10.0)
    assert left == [], left
