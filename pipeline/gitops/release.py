"""A release = the pins that say what runs: image digests, model revision (+ artifact), chart version (+ digest).

`environments/<env>/release.yaml` holds exactly these fields (Helm values shape); the
pipeline is the only writer. Evidence = the stage results that vouch for the release.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

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
    "model_repository": (REPOSITORY_RE, "an artifact repository (host[:port]/path, lower case)"),
    "model_digest": (DIGEST_RE, "an OCI manifest digest (sha256:<64 hex>)"),
    "model_content_digest": (DIGEST_RE, "a model content digest (sha256:<64 hex> of MANIFEST.sha256)"),
}
MODEL_PINS = ("model_repository", "model_digest", "model_content_digest")
# Pins written only when set; a promotion of a release without them removes stale ones.
OPTIONAL_PINS = (
    ("release", "chartDigest"),
    ("release", "registry"),
    ("gateway", "image", "repository"),
    ("vllm", "image", "repository"),
    ("vllm", "model", "source"),
    ("vllm", "model", "artifact", "repository"),
    ("vllm", "model", "artifact", "digest"),
    ("vllm", "model", "artifact", "contentDigest"),
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
    # The model as an OCI artifact (pipeline.models.artifact): where it lives, its manifest digest and
    # the content digest its init container verifies. All three or none; None = the chart downloads
    # vllm.model.id at model_revision from the hub. Written as vllm.model.artifact.* (+ source: artifact).
    model_repository: str | None = None
    model_digest: str | None = None
    model_content_digest: str | None = None

    @field_validator(
        "gateway_digest",
        "vllm_digest",
        "chart_digest",
        "registry",
        "gateway_repository",
        "vllm_repository",
        "model_repository",
        "model_digest",
        "model_content_digest",
    )
    @classmethod
    def _pattern(cls, v: str | None, info: ValidationInfo) -> str | None:
        regex, what = _PATTERNS[info.field_name or ""]
        if v is not None and not regex.match(v):
            raise ValueError(f"not {what}: {v!r}")
        return v

    @model_validator(mode="after")
    def _model_pins_together(self) -> Release:
        given = [k for k in MODEL_PINS if getattr(self, k)]
        if given and len(given) != len(MODEL_PINS):
            missing = [k for k in MODEL_PINS if k not in given]
            raise ValueError(f"a model artifact pin needs {', '.join(MODEL_PINS)}: missing {', '.join(missing)}")
        return self

    @property
    def model_artifact(self) -> str | None:
        """The pinned model artifact reference (<repository>@<digest>), None for a hub-pinned model."""
        return f"{self.model_repository}@{self.model_digest}" if self.model_repository and self.model_digest else None

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
        model: dict[str, Any] = {"revision": self.model_revision}
        if self.model_artifact:
            model["source"] = "artifact"
            model["artifact"] = {
                "repository": self.model_repository,
                "digest": self.model_digest,
                "contentDigest": self.model_content_digest,
            }
        return {
            "release": release,
            "gateway": {"image": gateway},
            "vllm": {"image": vllm, "model": model},
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
            **_model_artifact(values),
        )


def _opt(values: dict[str, Any], component: str) -> str | None:
    repo = (values.get(component) or {}).get("image", {}).get("repository")
    return str(repo) if repo else None


def _model_artifact(values: dict[str, Any]) -> dict[str, str | None]:
    artifact = ((values.get("vllm") or {}).get("model") or {}).get("artifact") or {}
    keys = {"model_repository": "repository", "model_digest": "digest", "model_content_digest": "contentDigest"}
    return {field: (str(artifact[key]) if artifact.get(key) else None) for field, key in keys.items()}


def release_of(result: StageResult) -> Release | None:
    """The Release a build result carries (for ci → promote)."""
    data = result.evidence.get("release")
    return Release.model_validate(data) if isinstance(data, dict) else None
