"""The LLM service chart as a versioned artifact: its version per build, the package, the OCI push.

Argo CD renders each environment from the chart `llm-service` at exactly the version pinned in
`environments/<env>/release.yaml` (`release.chartVersion`), pulled from the OCI repository
`<registry>/charts`. So every build gets an addressable version:

- a release (HEAD tagged `v<Chart.yaml version>`, clean tree): the Chart.yaml version itself;
- any other commit: a SemVer pre-release of it, `<version>-g<sha7>` (`...-g<sha7>.dirty-<hash8>`
  for an uncommitted tree). Never SemVer build metadata (`+`): OCI tags cannot carry it (Helm
  rewrites it to `_`, and Argo CD does not map it back).

`chartDigest` is the sha256 of the packaged .tgz, which is also the digest of the chart layer
in the pushed OCI manifest (`helm pull` + sha256sum verifies it). Packaging is reproducible (the
archive records file mtimes, so they are normalised first): rebuilding a commit in a fresh
checkout yields the same bytes, and re-pushing its version tag never changes what a pin names.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from pipeline.core.result import Check, Status
from pipeline.core.shell import run_command

log = logging.getLogger(__name__)

CHART_NAME = "llm-service"
CHART_DIR = Path("charts") / CHART_NAME
# Where `build` writes the package inside its stage directory (<run dir>/build/chart/).
BUILD_SUBDIR = Path("build") / "chart"
# OCI repository (no scheme, as Argo CD's `repoURL`) the chart is pushed to: `helm push <tgz> oci://<this>`.
REGISTRY_ENV = "PIPELINE_CHART_REGISTRY"
# Credentials for `helm registry login` (the Dagger module sets them from its registry secret).
USERNAME_ENV = "CHART_REGISTRY_USERNAME"
PASSWORD_ENV = "CHART_REGISTRY_PASSWORD"  # noqa: S105 - the variable's name, not a secret

_IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
# An exact SemVer 2.0 version without build metadata: what an OCI tag (and Argo CD) can address.
SEMVER_RE = re.compile(rf"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-{_IDENT}(?:\.{_IDENT})*)?$")
# 2000-01-01T00:00:00Z: the mtime of every file in the packaged chart.
REPRODUCIBLE_MTIME = 946684800
_DIGEST_LINE = re.compile(r"^Digest:\s*(sha256:[0-9a-f]{64})\s*$", re.M)


def chart_meta(chart_dir: Path) -> dict[str, object]:
    """Chart.yaml of a chart directory ({} if absent or unreadable)."""
    try:
        meta = YAML(typ="safe").load((chart_dir / "Chart.yaml").read_text())
    except (OSError, ValueError) as exc:
        log.debug("cannot read %s/Chart.yaml: %s", chart_dir, exc)
        return {}
    return meta if isinstance(meta, dict) else {}


def tree_version(root: Path) -> str | None:
    """`version` of the chart in this tree (charts/llm-service/Chart.yaml), None without one."""
    version = chart_meta(root / CHART_DIR).get("version")
    return str(version) if version is not None else None


def is_release_commit(root: Path, version: str) -> bool:
    """Is HEAD tagged `v<version>` (or `<version>`)? Then the build is that release's chart."""
    try:
        tags = subprocess.run(
            ["git", "tag", "--points-at", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return False
    return f"v{version}" in tags or version in tags


def build_version(base: str, commit: str, dirty: bool, *, release: bool, content: str = "") -> str:
    """The chart version of one build: `base` for a release, else a pre-release naming the commit."""
    if release and not dirty:
        return base
    suffix = f"g{commit[:7]}" if re.fullmatch(r"[0-9a-f]{7,40}", commit) else "gunknown"
    if dirty:
        suffix += f".dirty-{content[:8] or 'unknown'}"
    return f"{base}-{suffix}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def packaged_version(tgz: Path) -> str | None:
    """`version` in a packaged chart's Chart.yaml (`<name>/Chart.yaml` in the archive), None if unreadable."""
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            member = tar.extractfile(f"{CHART_NAME}/Chart.yaml")
            if member is None:
                return None
            meta = YAML(typ="safe").load(member.read().decode())
    except (OSError, tarfile.TarError, KeyError, ValueError, UnicodeDecodeError) as exc:
        log.debug("cannot read %s: %s", tgz, exc)
        return None
    version = meta.get("version") if isinstance(meta, dict) else None
    return str(version) if version is not None else None


def find_packaged(dirs: Iterable[Path], version: str) -> Path | None:
    """`llm-service-<version>.tgz` in the first of `dirs` that has it (and really is that version)."""
    for d in dirs:
        tgz = d / f"{CHART_NAME}-{version}.tgz"
        if tgz.is_file() and packaged_version(tgz) == version:
            return tgz
    return None


@dataclass(frozen=True)
class Packaged:
    path: Path
    version: str
    digest: str  # sha256 of the .tgz = the OCI chart layer digest


def package(
    helm: str, chart_dir: Path, version: str, app_version: str, dest: Path, log_dir: Path
) -> tuple[Check, Packaged | None]:
    """`helm package --version --app-version` into dest; the check carries the archive digest."""
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chart-package-") as tmp:
        # helm writes each file's mtime into the archive: a copy with fixed mtimes makes the same
        # content the same bytes (hence the same digest) in any checkout.
        src = Path(tmp) / chart_dir.name
        shutil.copytree(chart_dir, src, symlinks=False)
        for path in [src, *src.rglob("*")]:
            os.utime(path, (REPRODUCIBLE_MTIME, REPRODUCIBLE_MTIME), follow_symlinks=False)
        argv = [
            helm,
            "package",
            str(src),
            "--version",
            version,
            "--app-version",
            app_version,
            "--destination",
            str(dest),
        ]
        check, _ = run_command("chart package", argv, cwd=Path(tmp), log_dir=log_dir)
    if check.status is not Status.PASSED:
        return check, None
    tgz = dest / f"{chart_dir.name}-{version}.tgz"
    if not tgz.is_file():
        check.status, check.detail = Status.FAILED, f"helm package wrote no {tgz.name}"
        return check, None
    digest = sha256_file(tgz)
    check.detail = f"{tgz.name} {digest}"
    return check, Packaged(tgz, version, digest)


def push(
    helm: str, tgz: Path, registry: str | None, log_dir: Path, *, plain_http: bool = False
) -> tuple[Check, str | None]:
    """`helm push <tgz> oci://<registry>`: SKIPPED without a registry, never a silent pass.

    Logs in first when $CHART_REGISTRY_PASSWORD is set (password on stdin, never in argv or logs);
    otherwise relies on an existing `helm registry login`. `plain_http` only for the embedded
    registry on loopback. Returns (check, manifest digest).
    """
    if not registry:
        why = f"no chart registry (--chart-registry or ${REGISTRY_ENV}); packaged only, not published"
        return Check(name="chart push", status=Status.SKIPPED, detail=why), None
    registry = registry.removeprefix("oci://").rstrip("/")
    password = os.environ.get(PASSWORD_ENV)
    if password:
        host = registry.split("/", 1)[0]
        user = os.environ.get(USERNAME_ENV, "")
        try:
            proc = subprocess.run(
                [helm, "registry", "login", host, "--username", user, "--password-stdin"],
                input=password,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            login_ok, login_out = proc.returncode == 0, (proc.stderr or proc.stdout).strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            login_ok, login_out = False, str(exc)
        if not login_ok:
            return Check(
                name="chart push", status=Status.FAILED, detail=f"helm registry login {host}: {login_out}"
            ), None
    argv = [helm, "push", str(tgz), f"oci://{registry}", *(["--plain-http"] if plain_http else [])]
    check, output = run_command("chart push", argv, cwd=tgz.parent, log_dir=log_dir)
    if check.status is not Status.PASSED:
        return check, None
    m = _DIGEST_LINE.search(output)
    digest = m.group(1) if m else None
    check.detail = f"oci://{registry}/{CHART_NAME}:{packaged_version(tgz)} {digest or '(digest not reported)'}"
    return check, digest
