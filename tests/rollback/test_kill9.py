"""kill -9 of the controller mid-rollback: the remote is never half-written; the retry finishes once."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo, git
from tests.rollback.conftest import LiveController, alert_payload


def install_hook(remote: str, name: str, marker: Path, sleep: float) -> Path:
    hook = Path(remote) / "hooks" / name
    hook.write_text(f"#!/bin/sh\ntouch '{marker}'\nsleep {sleep}\nexit 0\n")
    hook.chmod(0o755)
    return hook


def fire_and_kill(ctl: LiveController, payload: dict[str, object], marker: Path) -> None:
    """POST in the background, SIGKILL the controller's process group once the push is in flight."""

    def post() -> None:
        # The server dies under us: expected.
        with contextlib.suppress(httpx.HTTPError):
            ctl.post(payload, timeout=20)

    t = threading.Thread(target=post, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline, "push never started"
        time.sleep(0.02)
    assert ctl.proc is not None
    ctl.proc.signal(signal.SIGKILL)
    ctl.proc.proc.wait(10)  # type: ignore[union-attr]
    t.join(10)


def rollback_commits(remote: str, tmp_path: Path, name: str) -> tuple[GitOpsRepo, int]:
    repo = GitOpsRepo(remote, tmp_path / name)
    repo.sync()
    return repo, sum(1 for c in repo.log() if c.trailer("Rollback-Env") == "staging")


@pytest.mark.parametrize("hook", ["pre-receive", "post-receive"])
def test_kill9_mid_rollback_then_retry(hook: str, remote: str, tmp_path: Path, v1_v2: tuple[Release, Release]) -> None:
    v1, v2 = v1_v2
    payload = alert_payload()
    marker = tmp_path / "pushing"
    hook_file = install_hook(remote, hook, marker, sleep=30)
    before, _ = rollback_commits(remote, tmp_path, "before")
    fire_and_kill(LiveController(remote, tmp_path / "one").start(), payload, marker)
    hook_file.unlink()

    after_kill, n = rollback_commits(remote, tmp_path, "after-kill")
    assert git("fsck", "--no-progress", cwd=Path(remote)) is not None
    if hook == "pre-receive":
        # Killed before the ref moved: the remote is exactly as before.
        assert after_kill.head() == before.head() and n == 0
        assert pm.read_release(after_kill, "staging") == v2
    else:
        # Killed after the ref moved: the whole rollback commit is there, nothing partial.
        assert n == 1 and pm.read_release(after_kill, "staging") == v1

    # Alertmanager re-sends the notification to the restarted controller.
    ctl = LiveController(remote, tmp_path / "two").start()
    try:
        outcome = ctl.post(payload).json()["results"][0]["outcome"]
    finally:
        ctl.stop()
    assert outcome == ("rolled_back" if hook == "pre-receive" else "duplicate")
    final, n = rollback_commits(remote, tmp_path, "final")
    assert n == 1 and pm.read_release(final, "staging") == v1 and pm.read_freeze(final, "staging").frozen
