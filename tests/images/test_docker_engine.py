"""Docker as the build engine, for real: a private dockerd, the embedded registry, app/Dockerfile.

Slow. Each run starts its OWN dockerd (temp --data-root/--exec-root/--pidfile, its own unix socket,
`--iptables=false --bridge=none`, so nothing on the host changes; builds use `--network host`) and
points the project's Engine at it through DOCKER_HOST — never the host's default socket. The local
Debian base is imported from the cached rootfs tarball (pipeline.runtime.base_image); the images are
built and pushed by `images.build_all`, the code the build stage runs. Skipped only where the
dockerd binary is absent (Debian's docker.io; `make tools` installs it); dockerd is stopped by PID
and its directories removed on every exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.artifacts import images
from pipeline.core.result import Status
from pipeline.runtime import base_image, engine, registry
from pipeline.runtime.procs import free_port
from pipeline.runtime.tools import REPO_ROOT

DOCKERD = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/sbin")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(DOCKERD is None, reason="dockerd binary absent (Debian's docker.io; `make tools` installs it)"),
]


def _mounts_under(root: Path) -> list[str]:
    prefix = f"{root}/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def _stop(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM by PID (dockerd then stops its containerd), SIGKILL after the grace period."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def dockerd() -> Iterator[str]:
    """A private dockerd; yields its DOCKER_HOST url."""
    assert DOCKERD is not None
    root = Path(tempfile.mkdtemp(prefix="llm-dockerd-", dir="/tmp"))  # short: unix socket paths are ≤107 bytes
    sock = root / "docker.sock"
    (root / "daemon.json").write_text("{}\n")  # not the host's /etc/docker/daemon.json
    argv = [
        DOCKERD,
        f"--config-file={root / 'daemon.json'}",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'docker.pid'}",
        f"--host=unix://{sock}",
        "--iptables=false",
        "--ip-forward=false",
        "--bridge=none",
        "--log-level=warn",
    ]
    log = (root / "dockerd.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        cli = engine.docker_cli({}, shutil.which)
        assert cli is not None, "dockerd is installed but no docker CLI"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dockerd exited {proc.returncode}: {(root / 'dockerd.log').read_text()[-2000:]}")
            ping = subprocess.run(
                [cli, "version", "--format", "{{.Server.Version}}"],
                env={**os.environ, "DOCKER_HOST": f"unix://{sock}"},
                capture_output=True,
                text=True,
                check=False,
            )
            if ping.returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dockerd not answering on {sock}: {ping.stderr} {(root / 'dockerd.log').read_text()[-2000:]}"
                )
            time.sleep(0.3)
        yield f"unix://{sock}"
    finally:
        _stop(proc)
        log.close()
        for point in _mounts_under(root):  # none after a clean stop; never leave one under rmtree
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def docker(dockerd: str) -> engine.Engine:
    environ = {engine.ENGINE_ENV: "docker", "DOCKER_HOST": dockerd, engine.BUILD_NETWORK_ENV: "host"}
    st = engine.detect(environ=environ, default_sockets=())
    assert st.engine is not None and st.engine.kind == "docker", st.reason
    assert st.engine.env["DOCKER_HOST"] == dockerd and st.engine.build_network == "host"
    return st.engine


@pytest.fixture(scope="module")
def base(docker: engine.Engine) -> base_image.BaseImage:
    """The local Debian base in this dockerd's store: `docker import` of the cached rootfs tarball."""
    made = base_image.ensure_local(docker, replaced="test")
    assert not made.cached  # a fresh data root: imported, not found
    assert base_image.ensure_local(docker, replaced="test").cached  # second call: from the store
    return made


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[registry.Registry]:
    sdir = tmp_path_factory.mktemp("docker-registry")
    r = registry.ensure(sdir)
    try:
        yield r
    finally:
        registry.stop(sdir)


@pytest.mark.timeout(1200)
def test_docker_builds_and_pushes_app_images_and_pulls_them_by_digest(
    docker: engine.Engine, base: base_image.BaseImage, reg: registry.Registry, tmp_path: Path
) -> None:
    labels = {"VERSION": "0.0.0-test", "REVISION": "0" * 40, "CREATED": "2026-11-30T00:00:00Z"}
    out = images.build_all(
        docker, REPO_ROOT, ("gateway", "simulator"), reg, "docker-test", labels, tmp_path, tmp_path / "wheels"
    )
    by_name = {c.name: c for c in out.checks}
    for name in ("base image", "image gateway", "push gateway", "image simulator", "push simulator"):
        assert by_name[name].status is Status.PASSED, f"{name}: {by_name[name].detail}"
    assert base.name in by_name["base image"].detail and out.bases[images.PYTHON_BASE_ARG]["name"] == base.name
    # The `# syntax=` frontend image cannot be pulled here: dockerd's built-in frontend, recorded.
    assert any("built-in frontend" in s for s in out.substitutions), out.substitutions
    numbers = {}
    for name in ("gateway", "simulator"):
        built = out.built[name]
        assert built.digest is not None and images.DIGEST_RE.match(built.digest)
        assert built.ref == f"{reg.host}/llm/{name}@{built.digest}"
        numbers[name] = (by_name[f"image {name}"].seconds, by_name[f"push {name}"].seconds)
    # The digest is the registry's: drop every local copy, pull by digest, get the same image back.
    gateway = out.built["gateway"]
    for ref in (gateway.local_ref, f"{reg.host}/llm/gateway:docker-test"):
        assert docker.run(["image", "rm", ref]).returncode == 0
    simulator = out.built["simulator"]
    docker.run(["image", "rm", simulator.local_ref, f"{reg.host}/llm/simulator:docker-test"])
    assert not docker.image_exists(gateway.image_id or "missing")
    pulled = docker.run(["pull", gateway.ref or ""], timeout=300)
    assert pulled.returncode == 0, pulled.stderr
    assert docker.run(["image", "inspect", "--format", "{{.Id}}", gateway.ref or ""]).stdout.strip() == gateway.image_id
    isolated = ["run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python"]
    ran = docker.run([*isolated, gateway.ref or "", "-c", "import os, app.gateway; print(os.getuid())"], timeout=120)
    assert ran.returncode == 0 and ran.stdout.strip() == "10001", ran.stderr
    print(f"\ndocker build/push seconds (gateway, simulator): {json.dumps(numbers)}")


def test_a_broken_dockerfile_fails_naming_the_image(
    docker: engine.Engine, base: base_image.BaseImage, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "app" / "Dockerfile").write_text(f"FROM {base.name} AS gateway\nRUN test -f /srv/app/missing.py\n")
    spec = images.ImageSpec("gateway", "gateway", "llm/gateway")
    check, built = images.build(docker, ctx, spec, "localhost/llm/gateway:broken", {}, tmp_path / "logs")
    assert check.status is Status.FAILED and check.name == "image gateway"
    assert "localhost/llm/gateway:broken" in check.detail and "/srv/app/missing.py" in check.detail, check.detail
    assert built.image_id is None and not docker.image_exists("localhost/llm/gateway:broken")


def test_a_refused_push_names_the_image(docker: engine.Engine, base: base_image.BaseImage, tmp_path: Path) -> None:
    nobody = registry.Registry(f"127.0.0.1:{free_port()}", local=True)  # nothing listens there
    built = images.Built(images.ImageSpec("base", "x", "llm-test/base"), base.name)
    check = images.push(docker, built, nobody, "t1", tmp_path)
    assert check.status is Status.FAILED and check.name == "push base"
    assert f"registry refused {nobody.host}/llm-test/base:t1" in check.detail and built.digest is None, check.detail


def test_the_proxy_ca_secret_never_lands_in_a_docker_image(
    docker: engine.Engine, base: base_image.BaseImage, tmp_path: Path
) -> None:
    ctx = tmp_path / "ca-ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "app" / "Dockerfile").write_text(
        f"FROM {base.name} AS t\nRUN --mount=type=secret,id=ca test -s /run/secrets/ca && echo seen > /seen\n"
    )
    marker = f"TESTCA{secrets.token_hex(16)}"  # unique: the base's files contain words like TESTCASE
    ca = tmp_path / "ca.pem"
    ca.write_text(f"-----BEGIN CERTIFICATE-----\n{marker}\n-----END CERTIFICATE-----\n")
    check, _ = images.build(
        docker, ctx, images.ImageSpec("t", "t", "llm-test/t"), "localhost/llm-test/ca:t", {}, tmp_path, ca=ca
    )
    assert check.status is Status.PASSED, check.detail
    seen = docker.run(
        ["run", "--rm", "--network", "none", "localhost/llm-test/ca:t", "sh", "-c", "cat /seen; ls /run/secrets 2>&1"]
    )
    assert "seen" in seen.stdout  # the build step had the CA
    saved = docker.run(["image", "save", "-o", str(tmp_path / "img.tar"), "localhost/llm-test/ca:t"])
    assert saved.returncode == 0, saved.stderr
    assert marker.encode() not in (tmp_path / "img.tar").read_bytes()  # no layer (uncompressed) carries it
