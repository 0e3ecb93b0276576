"""HAProxy (Debian's 2.6) as the load balancer that applies a canary's traffic weights on this machine.

The HTTPRoute of a Gateway API canary splits requests between the stable and the canary Service by
backendRef weights; here one HAProxy backend does the same with per-server weights changed at runtime
over its admin socket (`set server <backend>/<server> weight N`, `show stat`: HAProxy's management
guide, doc/management.txt "9.3 Unix Socket commands"). Servers are declared as slots (disabled, port
1) and pointed at a live address when a pod or process behind them comes up, so no reload is needed.
HAProxy runs in the foreground (`-db`) and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.runtime.procs import free_port, running
from pipeline.runtime.tools import require

HEALTH_PATH = "/haproxy-health"  # `monitor-uri`: answered by HAProxy itself (readiness of the balancer)
MAX_WEIGHT = 256  # HAProxy's per-server weight range is 0..256
# HAProxy 2.6 refuses a longer admin socket path ("socket path ... too long (max 97)": sun_path holds 108 bytes,
# less the temporary suffix it binds first); a long work dir gets a short private directory.
_SOCKET_PATH_MAX = 97
# What `set server ... addr` answers on success (src/server.c srv_update_addr_port), unlike an error.
_ADDR_NOTE = re.compile(r"^(no need to change the addr|IP changed from|.*changed from .* by 'stats socket command')")


class HAProxyError(RuntimeError):
    """The runtime API refused a command; the message carries HAProxy's answer."""


def render_config(port: int, socket_path: Path, backend: str, servers: Sequence[str], timeout_s: int = 60) -> str:
    """haproxy.cfg: one loopback frontend, one backend whose servers start disabled with weight 0."""
    if not servers:
        raise ValueError("haproxy: a backend needs at least one server slot")
    bad = [s for s in (backend, *servers) if not s or any(c.isspace() or c == "/" for c in s)]
    if bad:
        raise ValueError(f"haproxy: names must be non-empty without spaces or '/': {bad}")
    slots = "".join(f"  server {s} 127.0.0.1:1 weight 0 disabled\n" for s in servers)
    return (
        "global\n"
        f"  stats socket {socket_path} mode 600 level admin\n"
        "  maxconn 2000\n"
        "defaults\n"
        "  mode http\n"
        "  timeout connect 2s\n"
        f"  timeout client {timeout_s}s\n"
        f"  timeout server {timeout_s}s\n"
        "frontend canary\n"
        f"  bind 127.0.0.1:{port}\n"
        f"  monitor-uri {HEALTH_PATH}\n"
        f"  default_backend {backend}\n"
        f"backend {backend}\n"
        # Smooth weighted round robin, decided per request (HTTP keep-alive does not pin a client).
        "  balance roundrobin\n"
        f"{slots}"
    )


@dataclass(frozen=True)
class ServerStat:
    """One server's row of `show stat`."""

    name: str
    status: str  # UP, MAINT, DRAIN, ...
    weight: int
    current: int  # scur: requests/connections in flight
    total: int  # stot: sessions served since start
    http_5xx: int


class RuntimeAPI:
    """HAProxy's admin socket: one command per connection (non-interactive mode)."""

    def __init__(self, socket_path: Path, timeout: float = 5.0) -> None:
        self.socket_path, self.timeout = socket_path, timeout

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        out = b"".join(chunks).decode().strip()
        # A successful `set` answers nothing, or for `addr` a note saying what changed; an error answers
        # anything else (e.g. "No such server.").
        if line.startswith("set ") and out and not _ADDR_NOTE.search(out):
            raise HAProxyError(f"haproxy: `{line}` → {out}")
        return out

    def point(self, backend: str, server: str, port: int, weight: int) -> None:
        """Aim a server slot at 127.0.0.1:port with this weight and take it out of maintenance."""
        self.command(f"set server {backend}/{server} addr 127.0.0.1 port {port}")
        self.set_weight(backend, server, weight)
        self.command(f"set server {backend}/{server} state ready")

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"haproxy: weight {weight} of {backend}/{server} outside 0..{MAX_WEIGHT}")
        self.command(f"set server {backend}/{server} weight {weight}")

    def disable(self, backend: str, server: str) -> None:
        """Maintenance: no new requests; in-flight ones finish."""
        self.command(f"set server {backend}/{server} state maint")

    def stats(self, backend: str) -> dict[str, ServerStat]:
        """`show stat` rows of the backend's servers, by name."""
        text = self.command("show stat").lstrip("# ")
        out: dict[str, ServerStat] = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
                continue
            out[row["svname"]] = ServerStat(
                name=row["svname"],
                status=row["status"],
                weight=int(row["weight"] or 0),
                current=int(row["scur"] or 0),
                total=int(row["stot"] or 0),
                http_5xx=int(row.get("hrsp_5xx") or 0),
            )
        return out


@dataclass(frozen=True)
class Balancer:
    url: str  # the frontend clients send to
    backend: str
    api: RuntimeAPI


@contextlib.contextmanager
def haproxy(work: Path, servers: Sequence[str], backend: str = "llm", timeout: float = 15.0) -> Iterator[Balancer]:
    """A real HAProxy on a free loopback port with these server slots; stopped by PID on exit."""
    binary = require("haproxy")
    work.mkdir(parents=True, exist_ok=True)
    sock_dir = work
    private: Path | None = None
    if len(str(work / "admin.sock")) > _SOCKET_PATH_MAX:
        private = sock_dir = Path(tempfile.mkdtemp(prefix="haproxy-"))
    try:
        port = free_port()
        cfg = work / "haproxy.cfg"
        cfg.write_text(render_config(port, sock_dir / "admin.sock", backend, servers))
        url = f"http://127.0.0.1:{port}"
        with running(
            "haproxy",
            [binary, "-db", "-f", str(cfg)],
            work / "haproxy.log",
            ready_url=url + HEALTH_PATH,
            timeout=timeout,
        ):
            yield Balancer(url, backend, RuntimeAPI(sock_dir / "admin.sock"))
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
