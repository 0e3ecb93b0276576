"""Start local servers on free loopback ports and stop them by PID on every exit path.

Used by the stages (smoke, loadtest, drill) and by the tests: one mechanism, so a
server is never left behind whichever of them started it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ProcessFailed(RuntimeError):
    """A managed process exited or never became ready; the message carries its log tail."""


@dataclass
class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = self.log_path.open("ab")
        env = {**os.environ, **(self.env or {})}
        # A new session = its own process group, so stop() reaches grandchildren too.
        self.proc = subprocess.Popen(
            list(self.argv), stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=self.cwd, start_new_session=True
        )
        logf.close()
        log.debug("started %s pid=%s: %s", self.name, self.proc.pid, " ".join(self.argv))
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ProcessFailed(f"{self.name} was not started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 30.0, expect: int = 200) -> None:
        """Block until GET url answers `expect`, the process dies, or the timeout passes."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise ProcessFailed(
                        f"{self.name} exited (code {self.proc and self.proc.returncode}) "
                        f"before {url} answered:\n{self.log_tail()}"
                    )
                try:
                    r = client.get(url)
                    if r.status_code == expect:
                        return
                    last = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                time.sleep(0.05)
        raise ProcessFailed(f"{self.name} not ready at {url} after {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL after `grace` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=grace)
        # Children that outlived the leader still sit in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    ready_url: str | None = None,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[ManagedProcess]:
    """Context manager: start, wait until ready_url answers 200, always stop."""
    mp = ManagedProcess(name, argv, log_path, env=env, cwd=cwd).start()
    try:
        if ready_url:
            mp.wait_http(ready_url, timeout=timeout)
        yield mp
    finally:
        mp.stop()
