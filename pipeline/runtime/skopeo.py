"""Copy OCI artifacts between registries by digest with skopeo (Debian's `skopeo`).

An image and a model artifact alike are manifests plus blobs: `skopeo copy --preserve-digests`
moves them without re-encoding, so the destination serves the SAME manifest digest (skopeo fails
rather than change it). The destination's digest is then read back independently
(`skopeo inspect --raw`, hashed here) and compared. Credentials come from the containers auth
file (`skopeo login` / `podman login`, $REGISTRY_AUTH_FILE), never from argv.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import dataclass

from pipeline.runtime.tools import require

BINARY = "skopeo"
# A registry that answers slowly or drops a connection mid-blob: skopeo retries each request.
RETRIES = 2
COPY_TIMEOUT_S = 1800.0  # a multi-GB vLLM image over a slow link; a loopback copy takes seconds
INSPECT_TIMEOUT_S = 120.0


class SkopeoError(RuntimeError):
    """skopeo failed; the message carries the reference and skopeo's own error."""


@dataclass(frozen=True)
class Copied:
    """One artifact copied: where from, where to, the digest both serve, how long it took."""

    source: str  # repository@digest
    destination: str  # repository@digest
    digest: str
    seconds: float


def _tls(flag: str, verify: bool) -> str:
    return f"--{flag}={'true' if verify else 'false'}"


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SkopeoError(f"`{' '.join(argv[:2])}` did not finish within {timeout:.0f}s") from exc


def _last_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit {proc.returncode}"


def manifest_digest(repository: str, digest: str, *, tls_verify: bool) -> str:
    """The digest of the manifest `repository@digest` serves, computed here from its raw bytes."""
    argv = [require(BINARY), "inspect", "--raw", _tls("tls-verify", tls_verify), f"docker://{repository}@{digest}"]
    proc = _run(argv, INSPECT_TIMEOUT_S)
    if proc.returncode != 0:
        raise SkopeoError(f"{repository}@{digest}: {_last_error(proc)}")
    return "sha256:" + hashlib.sha256(proc.stdout).hexdigest()


def copy_by_digest(
    source: str, destination: str, digest: str, *, src_tls_verify: bool, dest_tls_verify: bool
) -> Copied:
    """Copy `source@digest` to `destination@digest` (every platform of an index) and verify that the
    destination serves exactly `digest`. Raises SkopeoError naming the reference that failed."""
    src, dst = f"{source}@{digest}", f"{destination}@{digest}"
    t0 = time.monotonic()
    argv = [
        require(BINARY),
        "copy",
        "--all",  # an index (multi-arch image) with every manifest it lists, not just this machine's
        "--preserve-digests",  # fail rather than convert a manifest (the pins name its digest)
        f"--retry-times={RETRIES}",
        "--quiet",
        _tls("src-tls-verify", src_tls_verify),
        _tls("dest-tls-verify", dest_tls_verify),
        f"docker://{src}",
        f"docker://{dst}",
    ]
    proc = _run(argv, COPY_TIMEOUT_S)
    if proc.returncode != 0:
        raise SkopeoError(f"copy {src} → {dst}: {_last_error(proc)}")
    served = manifest_digest(destination, digest, tls_verify=dest_tls_verify)
    if served != digest:
        raise SkopeoError(f"{dst} serves manifest {served}, not {digest}")
    return Copied(source=src, destination=dst, digest=digest, seconds=round(time.monotonic() - t0, 3))
