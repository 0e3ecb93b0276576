"""A release = the pins that say what runs: image digests, model revision, chart version (+ digest).

`environments/<env>/release.yaml` holds exactly these fields (Helm values shape); the
pipeline is the only writer. Evidence = the stage results that vouch for the release.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from pipeline.core.result import StageResult

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# The chart's image repository pattern (values.schema.json): HOST[:PORT]/PATH, lower case.
REPOSITORY_RE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+$")
REGISTRY_RE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$")
_PATTERNS = {
    "gateway_digest": (DIGEST_RE, "an image digest (sha256:<64 hex>)"),
    "vllm_digest": (DIGEST_RE, "an image digest (sha256:<64 hex>)"),
    "chart_digest": (DIGEST_RE, "a chart digest (sha256:<64 hex>)"),
    "registry": (REGISTRY_RE, "a registry (host[:port][/path], lower case)"),
    "gateway_repository": (REPOSITORY_RE, "an image repository (host[:port]/path, lower case)"),
    "vllm_repository": (REPOSITORY_RE, "an image repository (host[:port]/path, lower case)"),
}
# Pins written only when set; a promotion of a release without them removes stale ones.
OPTIONAL_PINS = (
    ("release", "chartDigest"),
    ("release", "registry"),
    ("gateway", "image", "repository"),
    ("vllm", "image", "repository"),
)


class Release(BaseModel):
    """The promotable pins of one release."""

    id: str = Field(description="release identifier, e.g. 0.1.0+g1a2b3c4")
    commit: str = Field(description="source commit the release was built from")
    # Exact version of the chart `llm-service` in the OCI chart repository: Argo CD's targetRevision.
    chart_version: str
    gateway_digest: str
    vllm_digest: str
    model_revision: str
    # False when the local executor could not build images: digests are content hashes
    # of the build context, not registry digests (the evidence says why).
    images_built: bool = True
    # sha256 of the packaged chart (= its OCI layer digest); None for releases built before charts
    # were packaged. Written as release.chartDigest only when set.
    chart_digest: str | None = None
    # Where the images were pushed (registry HOST[:PORT][/PATH]) and the repository each pinned
    # digest lives in — the chart pulls <repository>@<digest>, so the pins say where, not only what
    # (vllm's is llm/vllm-cpu where the CUDA image could not be built). None when nothing was pushed.
    registry: str | None = None
    gateway_repository: str | None = None
    vllm_repository: str | None = None

    @field_validator(
        "gateway_digest", "vllm_digest", "chart_digest", "registry", "gateway_repository", "vllm_repository"
    )
    @classmethod
    def _pattern(cls, v: str | None, info: ValidationInfo) -> str | None:
        regex, what = _PATTERNS[info.field_name or ""]
        if v is not None and not regex.match(v):
            raise ValueError(f"not {what}: {v!r}")
        return v

    def to_values(self) -> dict[str, Any]:
        """The Helm values layout written to release.yaml."""
        release: dict[str, Any] = {
            "id": self.id,
            "commit": self.commit,
            "chartVersion": self.chart_version,
            "imagesBuilt": self.images_built,
        }
        if self.chart_digest:
            release["chartDigest"] = self.chart_digest
        if self.registry:
            release["registry"] = self.registry
        gateway: dict[str, Any] = {"digest": self.gateway_digest}
        vllm: dict[str, Any] = {"digest": self.vllm_digest}
        if self.gateway_repository:
            gateway["repository"] = self.gateway_repository
        if self.vllm_repository:
            vllm["repository"] = self.vllm_repository
        return {
            "release": release,
            "gateway": {"image": gateway},
            "vllm": {"image": vllm, "model": {"revision": self.model_revision}},
        }

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Release:
        rel = values.get("release") or {}
        return cls(
            id=str(rel.get("id", "")),
            commit=str(rel.get("commit", "")),
            chart_version=str(rel.get("chartVersion", "")),
            images_built=bool(rel.get("imagesBuilt", True)),
            chart_digest=str(rel["chartDigest"]) if rel.get("chartDigest") else None,
            registry=str(rel["registry"]) if rel.get("registry") else None,
            gateway_repository=_opt(values, "gateway"),
            vllm_repository=_opt(values, "vllm"),
            gateway_digest=str(values.get("gateway", {}).get("image", {}).get("digest", "")),
            vllm_digest=str(values.get("vllm", {}).get("image", {}).get("digest", "")),
            model_revision=str(values.get("vllm", {}).get("model", {}).get("revision", "")),
        )


def _opt(values: dict[str, Any], component: str) -> str | None:
    repo = (values.get(component) or {}).get("image", {}).get("repository")
    return str(repo) if repo else None


def release_of(result: StageResult) -> Release | None:
    """The Release a build result carries (for ci → promote)."""
    data = result.evidence.get("release")
    return Release.model_validate(data) if isinstance(data, dict) else None
