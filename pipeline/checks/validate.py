"""Schema validation of rendered manifests, in-process (no subprocess per object).

- Core kinds: the strict OpenAPI-derived JSON schemas bundled with kubernetes-validate,
  compiled once per (version, kind) and reused across objects and environments.
- Custom resources: JSON schemas from a configurable location, kubeconform style — a directory
  laid out `<group>/<kind>_<version>.json` or a URL template such as the datreeio catalog
  `https://raw.githubusercontent.com/datreeio/CRDs-catalog/main/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json`.
- ApplicationSet expansion for the git directory and files generators, so generated Applications
  can be validated and policy-checked like hand-written ones.
"""

from __future__ import annotations

import functools
import importlib.resources as importlib_resources
import json
import os
import re
import threading
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import yaml
from referencing.jsonschema import DRAFT202012

DEFAULT_KUBE_VERSION = "1.33"
CRD_SCHEMAS_ENV = "PIPELINE_CRD_SCHEMAS"
# Relative to the repo root: the shared catalog copy used by tests and CI (never copied in).
DEFAULT_CRD_SCHEMAS = "../shared/schemas/crds"
# Under the Dagger executor the repo is the container's whole world (../shared is not there):
# without --crd-schemas (a mounted directory) the public catalog is the default.
DAGGER_CRD_SCHEMAS = (
    "https://raw.githubusercontent.com/datreeio/CRDs-catalog/main/"
    "{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"
)


@dataclass(frozen=True)
class Finding:
    """One validation failure, naming the object and where in it."""

    obj: str
    message: str

    def __str__(self) -> str:
        return f"{self.obj}: {self.message}"


def object_name(doc: dict[str, Any]) -> str:
    """`Kind <namespace/name>` (namespace omitted when absent), as used in every message."""
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{doc.get('kind', '?')} <{ns + '/' if ns else ''}{name}>"


def _format_error(err: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in err.absolute_path) or "(root)"
    return f"{path}: {err.message}"


# --- core kinds -------------------------------------------------------------------------------

_SCHEMA_ROOT = importlib_resources.files("kubernetes_validate") / "kubernetes-json-schema"


def _bundled_version(desired: str) -> str:
    """The newest bundled schema version not newer than `desired` (major.minor)."""
    want = tuple(int(x) for x in desired.lstrip("v").split(".")[:2])
    versions = []
    for entry in _SCHEMA_ROOT.iterdir():
        m = re.match(r"^v(\d+)\.(\d+)\.(\d+)-local-strict$", entry.name)
        if m:
            versions.append(((int(m.group(1)), int(m.group(2))), entry.name))
    candidates = sorted(v for v in versions if v[0] <= want)
    if not candidates:
        raise ValueError(f"kubernetes-validate bundles no schemas for Kubernetes {desired}")
    return candidates[-1][1]


@functools.lru_cache(maxsize=8)
def _definitions(schema_dir: str) -> referencing.Registry[Any]:
    defs = json.loads((_SCHEMA_ROOT / schema_dir / "_definitions.json").read_text())
    resource: referencing.Resource[Any] = referencing.Resource.from_contents(defs, default_specification=DRAFT202012)
    return resource @ referencing.Registry()


_lock = threading.Lock()


@functools.lru_cache(maxsize=256)
def _core_validator(schema_dir: str, kind: str, api_version: str) -> jsonschema.Draft202012Validator | None:
    # Same file naming as kubernetes-validate: rbac.authorization.k8s.io/v1 -> rbac-v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _SCHEMA_ROOT / schema_dir / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=_definitions(schema_dir))


class CoreValidator:
    """Strict validation of built-in kinds; `is_core` tells which kinds it knows."""

    def __init__(self, kube_version: str = DEFAULT_KUBE_VERSION) -> None:
        self.schema_dir = _bundled_version(kube_version)

    def validator(self, doc: dict[str, Any]) -> jsonschema.Draft202012Validator | None:
        with _lock:  # lru_cache is thread-safe, but avoid compiling the same schema twice
            return _core_validator(self.schema_dir, str(doc.get("kind")), str(doc.get("apiVersion")))

    def is_core(self, doc: dict[str, Any]) -> bool:
        return self.validator(doc) is not None

    def validate(self, doc: dict[str, Any]) -> list[Finding]:
        v = self.validator(doc)
        if v is None:
            return [Finding(object_name(doc), f"no schema for {doc.get('apiVersion')} {doc.get('kind')}")]
        return [Finding(object_name(doc), _format_error(e)) for e in v.iter_errors(doc)]


# --- custom resources -------------------------------------------------------------------------


def resolve_crd_location(location: str | os.PathLike[str] | None, repo_root: Path) -> str:
    """CLI value, else $PIPELINE_CRD_SCHEMAS, else (Dagger) the datreeio catalog URL template,
    else ../shared/schemas/crds relative to the repo."""
    default = DAGGER_CRD_SCHEMAS if os.environ.get("PIPELINE_EXECUTOR") == "dagger" else DEFAULT_CRD_SCHEMAS
    raw = str(location) if location else os.environ.get(CRD_SCHEMAS_ENV) or default
    if "://" in raw:
        return raw
    path = Path(raw)
    return str(path if path.is_absolute() else (repo_root / path).resolve())


class CrdSchemas:
    """JSON schemas of custom resources from a directory or a kubeconform-style URL template."""

    def __init__(self, location: str, timeout: float = 10.0) -> None:
        self.location = location
        self.timeout = timeout
        self._cache: dict[tuple[str, str, str], jsonschema.Draft202012Validator | None] = {}
        self._lock = threading.Lock()
        if "://" not in location and not Path(location).is_dir():
            raise FileNotFoundError(
                f"CRD schema location {location} is not a directory: point --crd-schemas or "
                f"${CRD_SCHEMAS_ENV} at a directory (<group>/<kind>_<version>.json) or a URL template "
                f"(default: {DEFAULT_CRD_SCHEMAS} relative to the repo)"
            )

    def _source(self, group: str, kind: str, version: str) -> str:
        if "://" not in self.location:
            return str(Path(self.location) / group / f"{kind}_{version}.json")
        return (
            self.location.replace("{{.Group}}", group)
            .replace("{{.ResourceKind}}", kind)
            .replace("{{.ResourceAPIVersion}}", version)
        )

    def _load(self, group: str, kind: str, version: str) -> jsonschema.Draft202012Validator | None:
        src = self._source(group, kind, version)
        try:
            if "://" in src:
                if not src.startswith(("https://", "http://")):
                    raise ValueError(f"unsupported schema URL scheme: {src}")
                with urllib.request.urlopen(src, timeout=self.timeout) as resp:  # noqa: S310 (scheme checked above)
                    schema = json.loads(resp.read())
            else:
                schema = json.loads(Path(src).read_text())
        except FileNotFoundError:
            return None
        except OSError as exc:
            if getattr(exc, "code", None) == 404:
                return None
            raise
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
        validator: jsonschema.Draft202012Validator = cls(schema)
        return validator

    def validator(self, doc: dict[str, Any]) -> jsonschema.Draft202012Validator | None:
        api_version = str(doc.get("apiVersion", ""))
        group, _, version = api_version.rpartition("/")
        key = (group, str(doc.get("kind", "")).lower(), version)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._load(*key)
            return self._cache[key]

    def validate(self, doc: dict[str, Any]) -> list[Finding]:
        v = self.validator(doc)
        if v is None:
            return [
                Finding(
                    object_name(doc),
                    f"no CRD schema for {doc.get('apiVersion')} {doc.get('kind')} at {self.location}",
                )
            ]
        return [Finding(object_name(doc), _format_error(e)) for e in v.iter_errors(doc)]


def validate_all(docs: Iterable[dict[str, Any]], core: CoreValidator, crds: CrdSchemas) -> list[Finding]:
    """Core kinds strictly with the bundled schemas; everything else against the CRD schemas."""
    findings: list[Finding] = []
    for doc in docs:
        findings += core.validate(doc) if core.is_core(doc) else crds.validate(doc)
    return findings


# --- ApplicationSet expansion -----------------------------------------------------------------

_IF_RE = re.compile(
    r'\{\{-?\s*if\s+eq\s+\.([\w.]+)\s+"([^"]*)"\s*-?\}\}(.*?)\{\{-?\s*else\s*-?\}\}(.*?)\{\{-?\s*end\s*-?\}\}', re.S
)
_VAR_RE = re.compile(r"\{\{-?\s*\.([\w.]+)\s*-?\}\}")


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    cur: Any = params
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            # goTemplateOptions missingkey=error makes Argo CD refuse such a template too.
            raise KeyError(f"template references .{dotted}, which the generator does not provide")
        cur = cur[part]
    return cur


def render_go_template(text: str, params: dict[str, Any]) -> str:
    """The subset of Go templates our ApplicationSet uses: `{{ .a.b }}` and `{{ if eq .a "x" }}..{{ else }}..{{ end }}`."""

    def _if(m: re.Match[str]) -> str:
        return m.group(3) if str(_lookup(params, m.group(1))) == m.group(2) else m.group(4)

    text = _IF_RE.sub(_if, text)
    text = _VAR_RE.sub(lambda m: str(_lookup(params, m.group(1))), text)
    if "{{" in text:
        raise ValueError(f"unsupported template construct in {text!r}")
    return text


def _render_tree(node: Any, params: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {render_go_template(k, params): _render_tree(v, params) for k, v in node.items()}
    if isinstance(node, list):
        return [_render_tree(v, params) for v in node]
    if isinstance(node, str):
        return render_go_template(node, params)
    return node


def _matches(pattern: str, path: str) -> bool:
    import fnmatch

    # Argo CD's path globbing: `*` does not cross `/`.
    return fnmatch.fnmatchcase(path, pattern) and path.count("/") == pattern.count("/")


def _normalized(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9-.]", "-", name)


def _path_params(rel: str, filename: str | None = None) -> dict[str, Any]:
    """Argo CD's `path` parameters (goTemplate): for environments/dev/release.yaml, path.path is
    environments/dev, path.basename dev, path.filename release.yaml."""
    directory = Path(rel).parent.as_posix() if filename else rel
    params: dict[str, Any] = {
        "path": directory,
        "basename": Path(directory).name,
        "basenameNormalized": _normalized(Path(directory).name),
        "segments": directory.split("/"),
    }
    if filename:
        params |= {"filename": filename, "filenameNormalized": _normalized(filename)}
    return params


def _git_generator_params(appset: dict[str, Any], git: dict[str, Any], repo_root: Path) -> list[dict[str, Any]]:
    """Parameter sets of one git generator (directories or files) over this checkout."""
    param_sets: list[dict[str, Any]] = []
    if git.get("directories"):
        includes = [d["path"] for d in git["directories"] if not d.get("exclude")]
        excludes = [d["path"] for d in git["directories"] if d.get("exclude")]
        # Path.glob's `*` does not cross `/` either, matching Argo CD's directory globbing.
        found = sorted({p.relative_to(repo_root).as_posix() for i in includes for p in repo_root.glob(i) if p.is_dir()})
        param_sets = [{"path": _path_params(rel)} for rel in found if not any(_matches(x, rel) for x in excludes)]
    elif git.get("files"):
        includes = [f["path"] for f in git["files"] if not f.get("exclude")]
        excludes = [f["path"] for f in git["files"] if f.get("exclude")]
        found = sorted(
            {p.relative_to(repo_root).as_posix() for i in includes for p in repo_root.glob(i) if p.is_file()}
        )
        for rel in found:
            if any(_matches(x, rel) for x in excludes):
                continue
            # goTemplate: the file's keys become parameters as they are (nested, not flattened).
            content = yaml.safe_load((repo_root / rel).read_text()) or {}
            if not isinstance(content, dict):
                raise ValueError(f"{object_name(appset)}: {rel} is not a YAML mapping")
            if "path" in content or "values" in content:
                raise ValueError(f"{object_name(appset)}: {rel} defines `path`/`values`, which the generator reserves")
            param_sets.append({**content, "path": _path_params(rel, Path(rel).name)})
    else:
        raise ValueError(f"{object_name(appset)}: only git directory or files generators can be expanded here")
    for params in param_sets:
        params["values"] = {k: render_go_template(str(v), params) for k, v in (git.get("values") or {}).items()}
    return param_sets


def expand_applicationset(appset: dict[str, Any], repo_root: Path) -> list[dict[str, Any]]:
    """Applications an ApplicationSet with git directory/files generators would generate from this checkout."""
    spec = appset.get("spec") or {}
    apps: list[dict[str, Any]] = []
    for gen in spec.get("generators") or []:
        git = gen.get("git")
        if not git:
            raise ValueError(f"{object_name(appset)}: only git generators can be expanded here")
        for params in _git_generator_params(appset, git, repo_root):
            tmpl = _render_tree(spec.get("template") or {}, params)
            apps.append(
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Application",
                    "metadata": {
                        **tmpl.get("metadata", {}),
                        "namespace": appset["metadata"].get("namespace", "argocd"),
                    },
                    "spec": tmpl.get("spec", {}),
                }
            )
    return apps
