"""The OCI engine the local executor builds, pushes and runs pods with: podman by default, Docker on request.

- podman (default; the one with `kube play`): used with a containers.conf the project owns
  (`<project cache>/containers/containers.conf`, passed as $CONTAINERS_CONF to every call): the
  `runc` runtime (crun fails on hybrid cgroups) and default ulimits no higher than this process's
  hard limits (podman's defaults need CAP_SYS_RESOURCE, which containers here lack).
- docker: only when configured (`PIPELINE_ENGINE=docker`) and its socket answers ($DOCKER_HOST, else
  the default socket); builds only (no `kube play`), BuildKit on. The CLI is `$PIPELINE_DOCKER_CLI`,
  else Debian's `/usr/bin/docker` (its 20.10 client builds with BuildKit itself; a newer CLI on PATH
  wants buildx), else `docker` on PATH. `$PIPELINE_BUILD_NETWORK` (e.g. `host`) is passed to every
  docker build as `--network` (a daemon started with `--bridge=none` has no other way out for downloads).
- a Dagger session: the Dagger module builds and publishes; the stages get the digests.

`detect()` never raises: with no engine it says why, and the image steps are SKIPPED with that reason.
Everything it consults (binaries, sockets, environment) can be injected, so tests do not depend on the host.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.runtime.tools import REPO_ROOT

Kind = Literal["podman", "docker", "dagger"]
ENGINE_ENV = "PIPELINE_ENGINE"  # podman (default) | docker
DOCKER_CLI_ENV = "PIPELINE_DOCKER_CLI"  # the docker client to use (default: Debian's, else PATH)
DEBIAN_DOCKER_CLI = "/usr/bin/docker"  # docker.io's 20.10 client: BuildKit without buildx
BUILD_NETWORK_ENV = "PIPELINE_BUILD_NETWORK"  # `--network` for docker builds (e.g. host); unset = the daemon's default
# Where a Docker engine listens when no variable says otherwise.
DEFAULT_DOCKER_SOCKETS = ("unix:///var/run/docker.sock",)
# Podman's defaults, capped at this process's hard limits (docs/images.md, "Engine").
WANTED_ULIMITS = {"nofile": 20000, "nproc": 4096}


def project_cache() -> Path:
    """The project's cache dir for machine state (engine config, registry data, base images)."""
    return Path(os.environ.get("PIPELINE_STATE_DIR") or REPO_ROOT / ".cache")


@dataclass(frozen=True)
class Engine:
    """A reachable engine: its kind, CLI and the environment every call needs."""

    kind: Kind
    binary: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    detail: str = ""
    build_network: str | None = None  # `--network` for every build, when configured

    @property
    def can_play_pods(self) -> bool:
        return self.kind == "podman"

    def run(
        self, args: Sequence[str], *, timeout: float = 600, input: str | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `<engine> args` with the engine's environment; never raises for a non-zero exit."""
        try:
            return subprocess.run(
                [self.binary, *args],
                env={**os.environ, **self.env},
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                cwd=cwd,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return subprocess.CompletedProcess([self.binary, *args], 125, "", f"{exc}")

    def image_exists(self, ref: str) -> bool:
        return self.run(["image", "inspect", "--format", "{{.Id}}", ref], timeout=60).returncode == 0


@dataclass(frozen=True)
class EngineStatus:
    engine: Engine | None
    reason: str

    @property
    def up(self) -> bool:
        return self.engine is not None


def _hard_limit(which: int) -> int:
    try:
        hard = resource.getrlimit(which)[1]
    except (OSError, ValueError):
        return 1024
    return hard if hard != resource.RLIM_INFINITY else 1 << 20


def containers_conf_text(hard_limits: Mapping[str, int] | None = None) -> str:
    """The project-owned containers.conf: runc, and ulimits podman may set without CAP_SYS_RESOURCE."""
    hard = hard_limits or {"nofile": _hard_limit(resource.RLIMIT_NOFILE), "nproc": _hard_limit(resource.RLIMIT_NPROC)}
    ulimits = ", ".join(f'"{k}={min(v, hard[k])}:{min(v, hard[k])}"' for k, v in WANTED_ULIMITS.items())
    return (
        "# Written by pipeline.runtime.engine (the project's podman settings; regenerated on each run).\n"
        "[containers]\n"
        f"default_ulimits = [{ulimits}]\n"
        "\n[engine]\n"
        'runtime = "runc"\n'
    )


def write_containers_conf(cache: Path | None = None, hard_limits: Mapping[str, int] | None = None) -> Path:
    path = (cache or project_cache()) / "containers" / "containers.conf"
    text = containers_conf_text(hard_limits)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def _socket_answers(url: str) -> bool:
    try:
        if url.startswith("unix://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(url.removeprefix("unix://"))
            return True
        m = re.match(r"^(?:tcp|http)://([^:/]+):(\d+)", url)
        if m:
            with socket.create_connection((m.group(1), int(m.group(2))), timeout=1.0):
                return True
    except OSError:
        pass
    return False


def docker_sockets(environ: Mapping[str, str], default_sockets: Sequence[str]) -> list[str]:
    candidates = [environ[v] for v in ("DOCKER_HOST", "BUILDKIT_HOST") if environ.get(v)]
    candidates += default_sockets
    if environ.get("XDG_RUNTIME_DIR"):
        candidates.append(f"unix://{environ['XDG_RUNTIME_DIR']}/docker.sock")
    return candidates


def docker_cli(environ: Mapping[str, str], which: Callable[[str], str | None]) -> str | None:
    """$PIPELINE_DOCKER_CLI, else Debian's client (BuildKit built in), else `docker` on PATH."""
    for candidate in (environ.get(DOCKER_CLI_ENV, "").strip(), DEBIAN_DOCKER_CLI, "docker"):
        found = which(candidate) if candidate else None
        if found:
            return found
    return None


def _podman_works(binary: str, env: Mapping[str, str]) -> tuple[bool, str]:
    """`podman info` with the project's config: the engine answers, not just a binary on PATH."""
    try:
        proc = subprocess.run(
            [binary, "info", "--format", "{{.Host.OCIRuntime.Name}}"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    out = (proc.stdout or proc.stderr).strip()
    return proc.returncode == 0, out.splitlines()[-1] if out else f"exit {proc.returncode}"


def detect(
    *,
    environ: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    default_sockets: Sequence[str] = DEFAULT_DOCKER_SOCKETS,
    podman_works: Callable[[str, Mapping[str, str]], tuple[bool, str]] = _podman_works,
    cache: Path | None = None,
) -> EngineStatus:
    """The engine to use, or None with the reason. A docker CLI alone is not an engine."""
    environ = os.environ if environ is None else environ
    if environ.get("DAGGER_SESSION_PORT"):
        return EngineStatus(Engine("dagger", detail="Dagger session"), "Dagger session")
    wanted = environ.get(ENGINE_ENV, "podman").strip().lower() or "podman"
    tried: list[str] = []
    if wanted == "podman":
        podman = which("podman")
        if podman is None:
            tried.append("podman: not installed (`make tools` installs it on Debian)")
        elif which("runc") is None:
            tried.append("podman: no runc runtime (`apt-get install runc`)")
        else:
            env = {"CONTAINERS_CONF": str(write_containers_conf(cache))}
            ok, why = podman_works(podman, env)
            if ok:
                return EngineStatus(Engine("podman", podman, env, f"podman ({why})"), f"podman ({why})")
            tried.append(f"podman: `podman info` failed: {why}")
    elif wanted != "docker":
        return EngineStatus(None, f"${ENGINE_ENV}={wanted!r}: known engines are podman and docker")
    docker = docker_cli(environ, which)
    network = environ.get(BUILD_NETWORK_ENV, "").strip() or None
    for url in docker_sockets(environ, default_sockets):
        if _socket_answers(url):
            if docker is None:
                tried.append(f"{url} answers but no docker CLI")
                break
            detail = f"docker at {url} (CLI {docker}" + (f", builds on network {network})" if network else ")")
            env = {"DOCKER_HOST": url, "DOCKER_BUILDKIT": "1"}
            return EngineStatus(Engine("docker", docker, env, detail, build_network=network), detail)
        tried.append(url)
    return EngineStatus(
        None, f"no container engine reachable (tried {'; '.join(tried) or 'nothing'}; no Dagger session)"
    )


_CACHED: EngineStatus | None = None


def current() -> EngineStatus:
    """detect() once per process (`podman info` costs about a second)."""
    global _CACHED
    if _CACHED is None:
        _CACHED = detect()
    return _CACHED
