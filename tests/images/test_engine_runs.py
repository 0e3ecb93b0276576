"""Real podman, the embedded registry and pods: each planted failure fails with a message naming it.

Slow (they build small images FROM the cached local Debian base and play pods). They FAIL, with
the reason, when podman / docker-registry / debootstrap are missing: `make test` installs them.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.artifacts import images
from pipeline.runtime import engine, pod, registry
from pipeline.runtime.procs import free_port

pytestmark = pytest.mark.slow


SERVER = textwrap.dedent(
    """
    import http.server, os, sys
    status = int(os.environ.get("READY_STATUS", "200"))
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status); self.end_headers(); self.wfile.write(b"ok")
    http.server.HTTPServer(("0.0.0.0", 8000), H).serve_forever()
    """
)


def build_tiny(podman: engine.Engine, base: str, tmp_path: Path, tag: str) -> str:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "server.py").write_text(SERVER)
    (ctx / "Dockerfile").write_text(f"FROM {base}\nCOPY server.py /srv/server.py\nUSER 10001:10001\n")
    ref = f"localhost/llm-test/tiny:{tag}"
    proc = podman.run(["build", "-q", "-t", ref, str(ctx)], timeout=600)
    assert proc.returncode == 0, proc.stderr
    return ref


def deployment(image: str, command: list[str], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    container = {
        "name": "app",
        "image": image,
        "command": command,
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
        "securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 10001, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    spec = {"containers": [container], "volumes": [{"name": "tmp", "emptyDir": {}}]}
    return [{"kind": "Deployment", "metadata": {"name": "llm-test"}, "spec": {"template": {"spec": spec}}}]


def play(podman: engine.Engine, docs: list[dict[str, Any]], tmp_path: Path, timeout: float = 40) -> None:
    local = pod.local_profile(docs, images={}, host_ports={"app": {"http": free_port()}})
    try:
        with pod.played(podman, local, tmp_path / "pod", secrets={}, timeout=timeout) as ready_s:
            assert ready_s < timeout
            assert httpx.get(local.ready_urls["app"], timeout=5).status_code == 200
    finally:
        exists = podman.run(["pod", "exists", local.pod_name]).returncode == 0
        assert not exists, f"pod {local.pod_name} left behind"


def test_registry_serves_after_the_run_keeps_its_port_and_stops(tmp_path: Path) -> None:
    sdir = tmp_path / "registry"
    first = registry.ensure(sdir)
    try:
        assert first.host.startswith("127.0.0.1:") and (sdir / "data").is_dir()
        assert registry.ensure(sdir) == first  # already serving: reused, not restarted
        assert registry.stop(sdir) and registry.status(sdir) is None
        again = registry.ensure(sdir)
        assert again.host == first.host  # pushed references stay valid across restarts
    finally:
        registry.stop(sdir)
    assert registry.status(sdir) is None


def test_build_push_and_pull_by_digest(
    podman: engine.Engine, base: str, reg: registry.Registry, tmp_path: Path
) -> None:
    ref = build_tiny(podman, base, tmp_path, "ok")
    built = images.Built(images.ImageSpec("tiny", "x", "llm-test/tiny"), ref)
    check = images.push(podman, built, reg, "t1", tmp_path)
    assert check.status.value == "passed", check.detail
    assert built.ref == f"{reg.host}/llm-test/tiny@{built.digest}"
    pulled = podman.run(["pull", "--tls-verify=false", built.ref], timeout=300)
    assert pulled.returncode == 0, pulled.stderr


def test_a_refused_push_names_the_image(podman: engine.Engine, base: str, tmp_path: Path) -> None:
    ref = build_tiny(podman, base, tmp_path, "refused")
    nobody = registry.Registry(f"127.0.0.1:{free_port()}", local=True)  # nothing listens there
    built = images.Built(images.ImageSpec("tiny", "x", "llm-test/tiny"), ref)
    check = images.push(podman, built, nobody, "t1", tmp_path)
    assert check.status.value == "failed" and check.name == "push tiny"
    assert f"registry refused {nobody.host}/llm-test/tiny:t1" in check.detail and built.digest is None


def test_a_pod_that_becomes_ready_is_torn_down_by_name(podman: engine.Engine, base: str, tmp_path: Path) -> None:
    image = build_tiny(podman, base, tmp_path, "ok")
    play(podman, deployment(image, ["python3", "/srv/server.py"]), tmp_path)


@pytest.mark.parametrize(
    ("command", "env", "expected"),
    [
        (["/usr/local/bin/no-such-entrypoint"], {}, "no-such-entrypoint"),  # broken entrypoint
        (["python3", "-c", "open('/srv/cache.db', 'w')"], {}, "Read-only file system: '/srv/cache.db'"),
        (["python3", "/srv/missing.py"], {}, "/srv/missing.py"),  # a file missing from the image
        (["python3", "/srv/server.py"], {"READY_STATUS": "503"}, "never ready"),
    ],
    ids=["broken-entrypoint", "read-only-write", "missing-file", "never-ready"],
)
def test_planted_pod_failures_name_the_cause_and_leave_no_pod(
    podman: engine.Engine, base: str, tmp_path: Path, command: list[str], env: dict[str, str], expected: str
) -> None:
    image = build_tiny(podman, base, tmp_path, "ok")
    with pytest.raises(pod.PodFailed) as info:
        play(podman, deployment(image, command, env), tmp_path, timeout=20)
    message = str(info.value)
    assert expected in message, message
    assert "app" in message  # names the container


def test_the_proxy_ca_never_lands_in_an_image(podman: engine.Engine, base: str, tmp_path: Path) -> None:
    ctx = tmp_path / "ca-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nRUN --mount=type=secret,id=ca test -s /run/secrets/ca && echo seen > /seen\n"
    )
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nTESTCA\n-----END CERTIFICATE-----\n")
    proc = podman.run(["build", "-q", "--secret", f"id=ca,src={ca}", "-t", "localhost/llm-test/ca:t", str(ctx)])
    assert proc.returncode == 0, proc.stderr
    listing = podman.run(["run", "--rm", "localhost/llm-test/ca:t", "sh", "-c", "cat /seen; ls /run/secrets 2>&1"])
    assert "seen" in listing.stdout  # the build step had the CA
    history = podman.run(
        ["image", "save", "--format", "oci-archive", "-o", str(tmp_path / "img.tar"), "localhost/llm-test/ca:t"]
    )
    assert history.returncode == 0
    assert b"TESTCA" not in (tmp_path / "img.tar").read_bytes()  # no layer carries it
    assert json.loads(podman.run(["image", "inspect", "localhost/llm-test/ca:t"]).stdout)
