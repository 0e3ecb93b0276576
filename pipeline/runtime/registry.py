"""The embedded OCI registry: Debian's distribution binary (`docker-registry`) on 127.0.0.1.

Started on demand, it keeps serving after the run (as a registry does), so `podman pull` and
`helm pull` of what was promoted work afterwards; `python -m pipeline registry stop` stops it.
A watchdog started beside it stops it once its data directory is gone: a registry of a deleted
(temporary) checkout must not keep serving a directory that no longer exists.
Its data, config, port and PID live under `<project cache>/registry/`; the port is kept across
restarts so pushed references stay valid. `--registry HOST[:PORT][/PATH]` (any other registry)
bypasses all of this; its credentials come from the environment or a secret file, never argv.

    python -m pipeline.runtime.registry start|stop|status
    python -m pipeline.runtime.registry watch PID DATA_DIR [INTERVAL]   (started by `start`)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipeline.runtime.engine import project_cache
from pipeline.runtime.procs import free_port
from pipeline.runtime.tools import find

BINARY = "docker-registry"
# Credentials for a non-embedded registry (the chart push uses its own, pipeline.artifacts.chart).
USERNAME_ENV = "PIPELINE_REGISTRY_USERNAME"
PASSWORD_FILE_ENV = "PIPELINE_REGISTRY_PASSWORD_FILE"  # noqa: S105 - the variable's name, not a secret
# How often the watchdog looks for the registry's data directory.
WATCH_INTERVAL_S = 2.0
# Where `python -m pipeline.runtime.registry` imports from (the watchdog runs it).
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class RegistryError(RuntimeError):
    """The local registry could not be started; the message says why."""


@dataclass(frozen=True)
class Registry:
    host: str  # host:port, what image references and `helm push oci://` use
    local: bool  # the embedded one: plain HTTP on loopback
    pid: int | None = None

    @property
    def tls_verify(self) -> bool:
        return not self.local

    def ref(self, repository: str) -> str:
        return f"{self.host}/{repository}"


def is_loopback(ref: str) -> bool:
    """A reference into a registry on loopback: the embedded one, plain HTTP (TLS verified elsewhere)."""
    return ref.startswith(("127.0.0.1:", "localhost:", "[::1]:"))


def state_dir() -> Path:
    return project_cache() / "registry"


def config_text(data_dir: Path, port: int) -> str:
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {data_dir}\n"
        "  delete:\n    enabled: true\n"
        "http:\n"
        f"  addr: 127.0.0.1:{port}\n"
    )


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(OSError):
        # A zombie or a recycled PID that is not ours does not count.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return any(BINARY.encode() in part for part in cmdline[:2])
    return True


def _read_state(sdir: Path) -> dict[str, int]:
    try:
        data = json.loads((sdir / "state.json").read_text())
        return {k: int(v) for k, v in data.items() if k in ("pid", "port")}
    except (OSError, ValueError, TypeError):
        return {}


def status(sdir: Path | None = None) -> Registry | None:
    """The embedded registry if it is serving, else None."""
    sdir = sdir or state_dir()
    st = _read_state(sdir)
    if "pid" in st and "port" in st and _alive(st["pid"]) and _answers(st["port"]):
        return Registry(f"127.0.0.1:{st['port']}", local=True, pid=st["pid"])
    return None


def port_free(port: int) -> bool:
    """Whether the registry can listen on `port` again. SO_REUSEADDR as the registry's own listener
    (Go sets it): connections of the previous run left in TIME_WAIT must not move the port."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_frees(port: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while not port_free(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def ensure(
    sdir: Path | None = None,
    timeout: float = 30.0,
    binary: str | None = None,
    watch_interval: float = WATCH_INTERVAL_S,
) -> Registry:
    """The embedded registry, started (detached, left serving) if it is not running, with a watchdog
    that stops it once its data directory is gone."""
    sdir = sdir or state_dir()
    running = status(sdir)
    if running:
        return running
    exe = binary or find(BINARY)
    if exe is None:
        raise RegistryError(f"{BINARY} is not installed (`apt-get install docker-registry`, or `make tools`)")
    sdir.mkdir(parents=True, exist_ok=True)
    previous = _read_state(sdir).get("port")
    # A registry that was just stopped may still hold its socket while it exits: wait a moment
    # rather than move the port (pushed references name it).
    port = previous if previous and _port_frees(previous, within=3.0) else free_port()
    (sdir / "data").mkdir(exist_ok=True)
    config = sdir / "config.yml"
    config.write_text(config_text((sdir / "data").resolve(), port))
    with (sdir / "registry.log").open("ab") as logf:
        proc = subprocess.Popen(
            [exe, "serve", str(config)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this run: a registry keeps serving
        )
    (sdir / "state.json").write_text(json.dumps({"pid": proc.pid, "port": port}) + "\n")
    start_watchdog(proc.pid, (sdir / "data").resolve(), watch_interval)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (sdir / "registry.log").read_text(errors="replace")[-1500:]
            raise RegistryError(f"{BINARY} exited with {proc.returncode}: {tail}")
        if _answers(port):
            return Registry(f"127.0.0.1:{port}", local=True, pid=proc.pid)
        time.sleep(0.1)
    stop(sdir)
    raise RegistryError(f"{BINARY} did not answer on 127.0.0.1:{port}/v2/ within {timeout:.0f}s")


def stop(sdir: Path | None = None, grace: float = 5.0) -> bool:
    """Stop the embedded registry by its recorded PID; True if one was running. Its data stays."""
    sdir = sdir or state_dir()
    state = _read_state(sdir)
    pid = state.get("pid")
    if not pid or not _alive(pid):
        return False
    deadline = time.monotonic() + grace
    _terminate(pid, grace)
    # Its memory goes before its sockets: the PID looks gone while the port is still held.
    port = state.get("port")
    if port:
        _port_frees(port, within=max(deadline - time.monotonic(), 1.0))
    return True


def _terminate(pid: int, grace: float) -> None:
    """SIGTERM, then SIGKILL if the registry has not exited within `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_watchdog(pid: int, data_dir: Path, interval: float = WATCH_INTERVAL_S) -> subprocess.Popen[bytes]:
    """`watch` in its own detached process (it must outlive this run, as the registry does)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.runtime.registry", "watch", str(pid), str(data_dir), str(interval)],
        cwd=PACKAGE_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def watch(pid: int, data_dir: Path, interval: float = WATCH_INTERVAL_S) -> bool:
    """Stop registry `pid` once `data_dir` is gone; return when the registry has exited (True if
    this stopped it). Lives exactly as long as the registry: no other bound is needed."""
    while _alive(pid):
        if not data_dir.is_dir():
            _terminate(pid, grace=5.0)
            return True
        time.sleep(interval)
    return False


def external(spec: str) -> Registry:
    """`--registry HOST[:PORT][/PATH]`: a registry this project does not run (TLS verified)."""
    spec = spec.removeprefix("oci://").removeprefix("https://").rstrip("/")
    return Registry(spec, local=is_loopback(spec))


def password() -> str | None:
    """The external registry's password: from the file $PIPELINE_REGISTRY_PASSWORD_FILE (never argv)."""
    path = os.environ.get(PASSWORD_FILE_ENV)
    if not path:
        return None
    return Path(path).read_text().strip() or None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    verb = args[0] if args else "status"
    if verb == "start":
        try:
            reg = ensure()
        except RegistryError as exc:
            print(f"registry: {exc}", file=sys.stderr)
            return 1
        print(f"registry serving at {reg.host} (pid {reg.pid}; data {state_dir() / 'data'})")
    elif verb == "stop":
        print("registry stopped" if stop() else "registry was not running")
    elif verb == "watch" and len(args) in (3, 4):
        watch(int(args[1]), Path(args[2]), float(args[3]) if len(args) == 4 else WATCH_INTERVAL_S)
    elif verb == "status":
        serving = status()
        print(f"registry serving at {serving.host} (pid {serving.pid})" if serving else "registry not running")
        return 0 if serving else 3
    else:
        print(
            "usage: python -m pipeline.runtime.registry start|stop|status  (or: watch PID DATA_DIR [INTERVAL])",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
