"""A local Python base image from Debian packages, for machines that cannot pull the pinned one.

`app/Dockerfile` builds FROM digest-pinned bases (`ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:…`).
Where that reference cannot be pulled, `build` makes a base once — `debootstrap --variant=minbase`
of Debian bookworm with Debian's Python 3.11, kept as a rootfs tarball under
`<project cache>/base-image/` and imported into the engine's image store (`podman import` or
`docker import`: each engine has its own store, both import the same cached tarball) — caches it
under a name derived from the recipe (so a recipe change makes a new one), and passes it in
through the same build arg. The evidence names the base actually used, its image ID, and that it replaced
the pinned one.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.runtime.engine import Engine, project_cache
from pipeline.runtime.tools import find

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Debian's Python 3.11 (what python:3.11-slim-bookworm carries, from Debian instead of python.org).
PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
# An imported rootfs has no image config: these become its ENV.
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    # Debian's python refuses `pip install` into the system (PEP 668); the Dockerfile installs uv that way.
    "PIP_BREAK_SYSTEM_PACKAGES": "1",
}
RECIPE_VERSION = "1"
REPOSITORY = "localhost/llm-base/python"

Progress = Callable[[str], None]


class BaseImageError(RuntimeError):
    """The local base could not be made; the message says which step failed."""


@dataclass(frozen=True)
class BaseImage:
    name: str  # reference given to the build arg
    digest: str  # sha256:<image ID> (a local image has no registry digest)
    replaced: str | None  # the pinned reference it stands in for, None when the pinned one was used
    cached: bool = False

    def evidence(self) -> dict[str, object]:
        return {"name": self.name, "digest": self.digest, "replaced": self.replaced, "cached": self.cached}


def recipe_key() -> str:
    text = "\n".join([RECIPE_VERSION, SUITE, MIRROR, *PACKAGES, *(f"{k}={v}" for k, v in sorted(IMAGE_ENV.items()))])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def local_name() -> str:
    return f"{REPOSITORY}:{SUITE}-{recipe_key()}"


def _image_id(engine: Engine, ref: str) -> str | None:
    proc = engine.run(["image", "inspect", "--format", "{{.Id}}", ref], timeout=60)
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out:
        return None
    return out if out.startswith("sha256:") else f"sha256:{out}"


def qualified(ref: str) -> str:
    """A Docker Hub short name as the fully qualified reference (podman refuses short names without a registries.conf)."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if "/" in ref else f"docker.io/library/{ref}"


def pinned_available(engine: Engine, ref: str, pull_timeout: float = 120) -> tuple[bool, str]:
    """Is the pinned base present, or can it be pulled? (True, "") or (False, why not)."""
    ref = qualified(ref)
    if engine.image_exists(ref):
        return True, ""
    proc = engine.run(["pull", "--quiet", ref], timeout=pull_timeout)
    if proc.returncode == 0:
        return True, ""
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return False, lines[-1] if lines else f"pull exit {proc.returncode}"


def rootfs_tarball(progress: Progress = lambda _m: None) -> Path:
    """The recipe's rootfs as a tarball, made once with debootstrap (≈40 s) and cached by recipe key."""
    work = project_cache() / "base-image"
    tarball = work / f"rootfs-{SUITE}-{recipe_key()}.tar"
    if tarball.is_file():
        return tarball
    debootstrap = find("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise BaseImageError("debootstrap is not installed (`apt-get install debootstrap`, or `make tools`)")
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=work) as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"base image: debootstrap {SUITE} with {' '.join(PACKAGES)} (≈40 s, once)")
        argv = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), MIRROR]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BaseImageError(f"debootstrap: {exc}") from None
        if proc.returncode != 0:
            raise BaseImageError(f"debootstrap exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (rootfs / junk).glob("*"):
                if f.is_file():
                    f.unlink()
        partial = Path(tmp) / "rootfs.tar"
        tar = subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."],
            capture_output=True,
            text=True,
            check=False,
        )
        if tar.returncode != 0:
            raise BaseImageError(f"tar of the rootfs: {tar.stderr[-1500:]}")
        partial.replace(tarball)  # whole or not at all
    for stale in work.glob(f"rootfs-{SUITE}-*.tar"):  # an older recipe's tarball
        if stale != tarball:
            stale.unlink(missing_ok=True)
    return tarball


def ensure_local(engine: Engine, replaced: str, progress: Progress = lambda _m: None) -> BaseImage:
    """The cached local base in this engine's store, imported from the cached rootfs tarball if missing."""
    name = local_name()
    existing = _image_id(engine, name)
    if existing:
        return BaseImage(name, existing, replaced, cached=True)
    tarball = rootfs_tarball(progress)
    changes = [arg for k, v in IMAGE_ENV.items() for arg in ("--change", f"ENV {k}={v}")]
    changes += ["--change", 'CMD ["python3"]']
    progress(f"base image: {engine.kind} import → {name}")
    imp = engine.run(["import", *changes, str(tarball), name], timeout=600)
    if imp.returncode != 0:
        raise BaseImageError(f"{engine.kind} import {name}: {(imp.stderr or imp.stdout)[-1500:]}")
    digest = _image_id(engine, name)
    if digest is None:
        raise BaseImageError(f"{name} missing after {engine.kind} import")
    return BaseImage(name, digest, replaced)


def resolve(engine: Engine, pinned: str, progress: Progress = lambda _m: None) -> BaseImage:
    """The pinned base when it can be had, else the local Debian base (recorded as a replacement)."""
    ok, why = pinned_available(engine, pinned)
    if ok:
        return BaseImage(qualified(pinned), _image_id(engine, qualified(pinned)) or "", None)
    progress(f"base image: pinned {pinned.split('@')[0]} unavailable ({why}); using a local Debian base")
    return ensure_local(engine, pinned, progress)
