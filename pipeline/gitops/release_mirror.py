"""A release's registry artifacts and where they go in a second registry (backup) or back (restore).

What a release pins in a registry: the gateway and vLLM images and the model artifact, each as
`<repository>@<digest>`. A mirror keeps every repository's path below the release's registry and
swaps only the registry: `<primary>/llm/gateway@sha256:X` is `<mirror>/llm/gateway@sha256:X`, the
same digest. So the pins resolve in the mirror by rewriting `release.registry` alone (restore
copies them back into the primary, or a promotion of the same digests may point at the mirror).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.gitops.release import DIGEST_RE, REGISTRY_RE, Release
from pipeline.runtime.registry import is_loopback
from pipeline.runtime.skopeo import Copied, copy_by_digest

Direction = Literal["mirror", "restore"]
# Artifact → (its repository pin, its digest pin) as release.yaml names them, and the Release fields.
ARTIFACTS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "gateway": (("gateway.image.repository", "gateway_repository"), ("gateway.image.digest", "gateway_digest")),
    "vllm": (("vllm.image.repository", "vllm_repository"), ("vllm.image.digest", "vllm_digest")),
    "model": (
        ("vllm.model.artifact.repository", "model_repository"),
        ("vllm.model.artifact.digest", "model_digest"),
    ),
}


class MirrorPlanError(ValueError):
    """The release or the options cannot make a mirror plan; the message names the field."""


@dataclass(frozen=True)
class Transfer:
    """One artifact to copy: from `source@digest` to `destination@digest`."""

    artifact: str
    source: str  # repository
    destination: str  # repository
    digest: str
    src_tls_verify: bool
    dest_tls_verify: bool


def check_registry(value: str, field: str) -> str:
    """A registry as the release pins one (host[:port][/path], lower case); `oci://` and a trailing / dropped."""
    spec = value.strip().removeprefix("oci://").removeprefix("https://").rstrip("/")
    if not REGISTRY_RE.match(spec):
        raise MirrorPlanError(f"{field}: not a registry (host[:port][/path], lower case): {value!r}")
    return spec


def _path_below(repository: str, registry: str | None) -> str:
    """The repository's path below the release's registry (without one: below its host)."""
    if registry and repository.startswith(registry + "/"):
        return repository[len(registry) + 1 :]
    return repository.split("/", 1)[1]


def pinned(release: Release) -> dict[str, tuple[str, str]]:
    """artifact → (repository, digest) as pinned; raises naming every pin that is missing."""
    if not release.images_built:
        raise MirrorPlanError(
            f"release {release.id} has release.imagesBuilt: false: its digests are build-context hashes, "
            "not registry digests, so nothing of it is in a registry to copy"
        )
    found: dict[str, tuple[str, str]] = {}
    missing: list[str] = []
    for artifact, ((repo_pin, repo_field), (digest_pin, digest_field)) in ARTIFACTS.items():
        # A release built before model artifacts has no model pins: it cannot be backed up whole.
        repository, digest = getattr(release, repo_field), getattr(release, digest_field)
        if not repository:
            missing.append(repo_pin)
        if not digest or not DIGEST_RE.match(str(digest)):
            missing.append(digest_pin)
        if repository and digest:
            found[artifact] = (str(repository), str(digest))
    if missing:
        raise MirrorPlanError(f"release {release.id} does not pin {', '.join(missing)}: it cannot be copied by digest")
    return found


def plan(
    release: Release, other: str, direction: Direction, *, tls_verify: bool | None = None, field: str = "--to"
) -> list[Transfer]:
    """The copies that back `release` up into registry `other` (mirror) or bring it back from there (restore).

    The release's own registry is reached with TLS unless on loopback; `other` with `tls_verify`
    (None: the same rule)."""
    other = check_registry(other, field)
    artifacts = pinned(release)
    primary = release.registry
    if primary is not None and other == primary:
        raise MirrorPlanError(f"{field}: {other} is the release's own registry (release.registry)")
    other_tls = (not is_loopback(other)) if tls_verify is None else tls_verify
    transfers = []
    for artifact, (repository, digest) in artifacts.items():
        there = f"{other}/{_path_below(repository, primary)}"
        here_tls = not is_loopback(repository)
        if direction == "mirror":
            t = Transfer(artifact, repository, there, digest, here_tls, other_tls)
        else:
            t = Transfer(artifact, there, repository, digest, other_tls, here_tls)
        transfers.append(t)
    return transfers


def copy(t: Transfer) -> Copied:
    """Copy one artifact by digest and verify the destination serves it (pipeline.runtime.skopeo)."""
    return copy_by_digest(
        t.source, t.destination, t.digest, src_tls_verify=t.src_tls_verify, dest_tls_verify=t.dest_tls_verify
    )
