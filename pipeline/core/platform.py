"""The organisation's configuration (`platform.yaml` at the repo root): the one source of every
value that names a registry, git host, domain, identity provider, model or environment.

Files that carry those values (charts' values, Argo CD objects, policy parameters, env overlays)
are derived from it by `python -m pipeline init --apply` and checked against it by
`python -m pipeline init --check` (pipeline/platform_config/)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

PLATFORM_FILE = Path("platform.yaml")

# Kubernetes object names the values end up in (namespaces, Application names, label values).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# <host[:port]>/<path>: an OCI repository without scheme (what `docker push` and Argo CD's OCI
# `repoURL` take), lower case as the distribution spec requires.
_REGISTRY = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")


def _pattern(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _url(*schemes: str) -> AfterValidator:
    def check(value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in schemes or not rest or " " in value:
            raise ValueError(f"{value!r} is not a {'/'.join(schemes)} URL")
        return value

    return AfterValidator(check)


DnsLabel = Annotated[str, _pattern(_DNS_LABEL, "a DNS-1123 label (lower case, digits, '-', ≤63)"), Field(max_length=63)]
DnsName = Annotated[str, _pattern(_DNS_NAME, "a DNS name (lower case)")]
HttpsUrl = Annotated[str, _url("https", "http")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Git(_Strict):
    url: HttpsUrl
    ssh_url: Annotated[str, _url("ssh", "https")] = Field(alias="sshUrl")
    branch: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._/-]+$")] = "main"


class Idp(_Strict):
    issuer: HttpsUrl
    audience: Annotated[str, Field(min_length=1)]
    jwks_url: HttpsUrl = Field(alias="jwksUrl")


class Model(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$")]
    revision: Annotated[str, _pattern(_HEX40, "a 40-hex commit hash (a branch or tag would float)")]
    served_name: Annotated[str, Field(alias="servedName", pattern=r"^[A-Za-z0-9._-]+$")]


LabelKey = Annotated[
    str,
    Field(
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
    ),
]


class Nodes(_Strict):
    gpu_pool_label: LabelKey = Field(alias="gpuPoolLabel")
    spot_label: LabelKey = Field(alias="spotLabel")
    spot_taint: LabelKey = Field(alias="spotTaint")


class Environment(_Strict):
    name: DnsLabel
    namespace: DnsLabel
    cluster: HttpsUrl = "https://kubernetes.default.svc"
    host: DnsName


class Platform(_Strict):
    organisation: DnsLabel
    registry: Annotated[str, _pattern(_REGISTRY, "a registry/namespace without scheme (e.g. registry.example.com/llm)")]
    git: Git
    homepage: HttpsUrl
    contact: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]
    label_domain: DnsName = Field(alias="labelDomain")
    idp: Idp
    model: Model
    nodes: Nodes
    environments: Annotated[list[Environment], Field(min_length=2)]

    @model_validator(mode="after")
    def _unique_environments(self) -> Platform:
        for what in ("name", "namespace"):
            values = [getattr(e, what) for e in self.environments]
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"environments: {what} must be unique, repeated: {', '.join(dupes)}")
        return self

    # Derived names, one definition each.
    @property
    def env_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.environments)

    @property
    def production(self) -> Environment:
        """The last environment: pinned by commit, approvals, soak."""
        return self.environments[-1]

    @property
    def registry_host(self) -> str:
        return self.registry.split("/", 1)[0]

    @property
    def chart_repo(self) -> str:
        return f"{self.registry}/charts"

    def image(self, name: str) -> str:
        return f"{self.registry}/{name}"

    def env(self, name: str) -> Environment:
        for e in self.environments:
            if e.name == name:
                return e
        raise KeyError(f"unknown environment {name!r} (platform.yaml has: {', '.join(self.env_names)})")

    def label(self, key: str) -> str:
        return f"{self.label_domain}/{key}"


class PlatformError(ValueError):
    """platform.yaml is missing, not YAML, or invalid: the message names the file and each field."""


def parse_platform(text: str, source: str = str(PLATFORM_FILE)) -> Platform:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlatformError(f"{source}: not YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PlatformError(f"{source}: expected a mapping at the top level")
    try:
        return Platform.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise PlatformError(f"{source}: {problems}") from exc


def load_platform(root: Path | None = None) -> Platform:
    """platform.yaml of the checkout at `root` (default: the working directory)."""
    path = (root or Path.cwd()) / PLATFORM_FILE
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise PlatformError(f"{path}: missing (write it with `python -m pipeline init`)") from exc
    return parse_platform(text, str(path))


@functools.cache
def repo_platform() -> Platform:
    """The platform of the checkout this code runs from (verb choices, defaults): read once."""
    return load_platform(Path(__file__).resolve().parents[2])
