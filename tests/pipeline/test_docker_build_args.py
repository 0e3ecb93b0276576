"""The Docker build path without a daemon: CLI choice, build flags, the `# syntax=` frontend, push digests.

tests/images/test_docker_engine.py proves the same path against a real dockerd.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts import images
from pipeline.runtime import engine

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@dataclass(frozen=True)
class FakeEngine(engine.Engine):
    """An Engine whose CLI is a function: argv → (exit code, stdout, stderr)."""

    answer: Callable[[Sequence[str]], tuple[int, str, str]] = lambda _argv: (0, "", "")

    def run(
        self, args: Sequence[str], *, timeout: float = 600, input: str | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        code, out, err = self.answer(list(args))
        return subprocess.CompletedProcess([self.binary, *args], code, out, err)


def test_the_debian_docker_client_is_preferred_and_an_override_wins() -> None:
    present = {"/usr/bin/docker": "/usr/bin/docker", "docker": "/usr/local/bin/docker", "/opt/d": "/opt/d"}
    assert engine.docker_cli({}, present.get) == "/usr/bin/docker"  # BuildKit without buildx
    assert engine.docker_cli({engine.DOCKER_CLI_ENV: "/opt/d"}, present.get) == "/opt/d"
    assert engine.docker_cli({}, {"docker": "/usr/local/bin/docker"}.get) == "/usr/local/bin/docker"
    assert engine.docker_cli({}, {}.get) is None


def test_docker_builds_get_plain_progress_and_the_configured_network() -> None:
    docker = engine.Engine("docker", "/usr/bin/docker", {"DOCKER_HOST": "unix:///x.sock"}, build_network="host")
    argv = images.build_argv(docker, images.IMAGES["gateway"], "localhost/x:t", {}, ca=None, wheelhouse=None)
    assert argv[argv.index("--progress") + 1] == "plain" and argv[argv.index("--network") + 1] == "host"
    assert "--layers" not in argv and "--format" not in argv  # podman-only flags
    podman = engine.Engine("podman", "/usr/bin/podman")
    assert "--network" not in images.build_argv(podman, images.IMAGES["gateway"], "x", {}, ca=None, wheelhouse=None)


def test_an_unreachable_syntax_frontend_is_dropped_and_recorded(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "app").mkdir(parents=True)
    (root / images.DOCKERFILE).write_text("# syntax=docker/dockerfile:1.7\nFROM x AS gateway\n")
    offline = FakeEngine("docker", "docker", answer=lambda argv: (1, "", "lookup registry-1.docker.io: no such host"))
    path, note = images.dockerfile_for(offline, root, tmp_path / "logs")
    assert path.is_absolute() and path.read_text() == "FROM x AS gateway\n"
    assert note is not None and "docker/dockerfile:1.7" in note and "no such host" in note
    online = FakeEngine("docker", "docker", answer=lambda argv: (0 if argv[0] == "pull" else 1, "", ""))
    assert images.dockerfile_for(online, root, tmp_path / "logs") == (images.DOCKERFILE, None)
    podman = FakeEngine("podman", "podman", answer=lambda argv: (1, "", "should not be asked"))
    assert images.dockerfile_for(podman, root, tmp_path / "logs") == (images.DOCKERFILE, None)


def test_the_docker_push_digest_is_the_registrys_for_that_repository() -> None:
    repo_digests = f'["127.0.0.1:5000/llm/simulator@{OTHER}", "127.0.0.1:5000/llm/gateway@{DIGEST}"]'
    docker = FakeEngine("docker", "docker", answer=lambda argv: (0, repo_digests, ""))
    assert images._docker_repo_digest(docker, "x", "127.0.0.1:5000/llm/gateway", "") == DIGEST
    no_inspect = FakeEngine("docker", "docker", answer=lambda argv: (1, "", "no such image"))
    output = f"t1: digest: {OTHER} size: 1364\n"
    assert images._docker_repo_digest(no_inspect, "x", "127.0.0.1:5000/llm/gateway", output) == OTHER
    assert images._docker_repo_digest(no_inspect, "x", "127.0.0.1:5000/llm/gateway", "pushed") == ""


def test_a_docker_cli_without_build_contexts_skips_the_wheelhouse_image() -> None:
    classic = FakeEngine("docker", "/usr/bin/docker", answer=lambda argv: (0, "  --network string\n", ""))
    buildx = FakeEngine("docker", "docker", answer=lambda argv: (0, "  --build-context stringArray\n", ""))
    assert not images.supports_build_context(classic) and images.supports_build_context(buildx)
    assert images.supports_build_context(engine.Engine("podman", "podman"))
