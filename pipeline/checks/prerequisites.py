"""Minimum versions of what a cluster must run, stated once (`policies/prerequisites.yaml`) and checked.

The render stage runs `check()` over everything it rendered (check `prerequisites`):

- every apiVersion/kind rendered (each env, each chart Application, the Argo CD objects) and every
  kind vendored in `policies/crd-schemas/SOURCE.yaml` is provided by exactly one listed entry, at
  that apiVersion; every CRD kind listed is vendored;
- every version-gated field exists in the schema render validates against: the CRD schema
  (`policies/crd-schemas` or `--crd-schemas`) for a component, the API schema of the stated
  minimum (bundled with kubernetes-validate) for Kubernetes; so a schema regenerated from an older
  catalog fails, naming the field and the component's minimum;
- the Kubernetes minimum is the highest lower bound of the charts' `kubeVersion`, and serves every
  Kubernetes kind listed.

Each entry also says how to install it and what verifies it in a cluster (`verify`), and the file
lists what the cluster needs besides components (`cluster`: an RWX StorageClass, PriorityClasses,
the ClusterSecretStore) and the Secrets no manifest creates unconditionally (`secrets`);
`python -m pipeline bootstrap --check` prints that plan or verifies it (pipeline/checks/cluster_prereqs.py).

`python -m pipeline.checks.prerequisites [--write]` prints the Markdown that docs/prerequisites.md
carries between its markers (or writes it there); a test keeps the two equal.
"""

from __future__ import annotations

import argparse
import importlib.resources as importlib_resources
import json
import re
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import referencing
import yaml
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from pipeline.checks import crd_schemas, validate

REPO_ROOT = Path(__file__).resolve().parents[2]
PREREQUISITES = Path("policies/prerequisites.yaml")
SOURCE = Path(validate.DEFAULT_CRD_SCHEMAS) / crd_schemas.MANIFEST
CHARTS = Path("charts")
DOC = Path("docs/prerequisites.md")
DOC_BEGIN = "<!-- prerequisites:begin (generated from policies/prerequisites.yaml) -->"
DOC_END = "<!-- prerequisites:end -->"
_KUBE_VERSION_RE = re.compile(r">=\s*v?(\d+)\.(\d+)")


class PrerequisitesError(ValueError):
    """The prerequisites file is missing or malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Api:
    """Kinds one entry provides at one apiVersion."""

    api_version: str
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class GatedField:
    """A field that exists only from some release on: kind + dotted path (`[]` = list items)."""

    api_version: str
    kind: str
    path: str
    since: str


@dataclass(frozen=True)
class Reference:
    title: str
    url: str


@dataclass(frozen=True)
class Verify:
    """What shows a component in a cluster: CRDs (name, served version), workload images whose tag is
    its version, a CRD annotation holding the version, named setting checks."""

    crds: tuple[tuple[str, str], ...] = ()
    images: tuple[str, ...] = ()
    bundle_version_annotation: str = ""
    checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Component:
    """Kubernetes itself or one component installed in the cluster, with its minimum version."""

    name: str
    minimum: str
    needed_for: str
    why: str
    references: tuple[Reference, ...]
    provides: tuple[Api, ...]
    fields: tuple[GatedField, ...]
    install: str = ""
    verify: Verify = Verify()

    @property
    def label(self) -> str:
        return f"{self.name} >= {self.minimum}"


@dataclass(frozen=True)
class Need:
    """Something the cluster must hold that no component provides: a StorageClass mode, a
    PriorityClass, a ClusterSecretStore, or a Secret/ConfigMap (with the keys read) per namespace."""

    kind: str
    name: str
    needed_for: str
    install: str
    namespaces: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    store_kind: str = ""


@dataclass(frozen=True)
class Cluster:
    rwx_access_mode: str
    rwx_needed_for: str
    rwx_install: str
    rwx_provisioners: tuple[str, ...]
    priority_classes: tuple[Need, ...]
    secret_stores: tuple[Need, ...]


@dataclass(frozen=True)
class Prerequisites:
    kubernetes: Component
    components: tuple[Component, ...]
    cluster: Cluster | None = None
    secrets: tuple[Need, ...] = ()

    @property
    def all(self) -> tuple[Component, ...]:
        return (self.kubernetes, *self.components)

    def provider(self, api_version: str, kind: str) -> Component | None:
        for comp in self.all:
            if any(a.api_version == api_version and kind in a.kinds for a in comp.provides):
                return comp
        return None


# --- loading ----------------------------------------------------------------------------------


def _str(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PrerequisitesError(f"{where}: `{key}` must be a non-empty string")
    return value.strip()


def _list(entry: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = entry.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise PrerequisitesError(f"{where}: `{key}` must be a list of mappings")
    return value


def _component(entry: Any, where: str) -> Component:
    if not isinstance(entry, dict):
        raise PrerequisitesError(f"{where}: must be a mapping")
    name = _str(entry, "name", where)
    where = f"{where} <{name}>"
    provides = []
    for api in _list(entry, "provides", where):
        kinds = api.get("kinds")
        if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
            raise PrerequisitesError(f"{where}: provides `kinds` must be a non-empty list of kind names")
        provides.append(Api(_str(api, "apiVersion", where), tuple(kinds)))
    references = tuple(
        Reference(_str(r, "title", where), _str(r, "url", where)) for r in _list(entry, "references", where)
    )
    if not references:
        raise PrerequisitesError(f"{where}: `references` must name the upstream source of the minimum")
    return Component(
        name=name,
        install=_str(entry, "install", where),
        verify=_verify(entry.get("verify"), where),
        minimum=_str(entry, "minimum", where),
        needed_for=_str(entry, "needed_for", where),
        why=" ".join(_str(entry, "why", where).split()),
        references=references,
        provides=tuple(provides),
        fields=tuple(
            GatedField(
                _str(f, "apiVersion", where), _str(f, "kind", where), _str(f, "path", where), _str(f, "since", where)
            )
            for f in _list(entry, "fields", where)
        ),
    )


def _strs(entry: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PrerequisitesError(f"{where}: `{key}` must be a list of non-empty strings")
    return tuple(value)


def _verify(entry: Any, where: str) -> Verify:
    if not isinstance(entry, dict):
        raise PrerequisitesError(
            f"{where}: `verify` must be a mapping (crds, images, bundle_version_annotation, checks)"
        )
    unknown = sorted(set(entry) - {"crds", "images", "bundle_version_annotation", "checks"})
    if unknown:
        raise PrerequisitesError(f"{where}: `verify` has unknown key(s) {', '.join(unknown)}")
    crds = []
    for crd in _strs(entry, "crds", where):
        name, sep, version = crd.partition("@")
        if not sep or "." not in name or not version:
            raise PrerequisitesError(f"{where}: verify crd {crd!r} is not <plural>.<group>@<served version>")
        crds.append((name, version))
    return Verify(
        crds=tuple(crds),
        images=_strs(entry, "images", where),
        bundle_version_annotation=str(entry.get("bundle_version_annotation") or ""),
        checks=_strs(entry, "checks", where),
    )


def _need(entry: Any, kind: str, where: str) -> Need:
    if not isinstance(entry, dict):
        raise PrerequisitesError(f"{where}: must be a mapping")
    name = _str(entry, "name", where)
    where = f"{where} <{name}>"
    labels = entry.get("labels") or {}
    if not isinstance(labels, dict):
        raise PrerequisitesError(f"{where}: `labels` must be a mapping")
    return Need(
        kind=kind if kind == "SecretStore" else str(entry.get("kind") or kind),
        name=name,
        needed_for=_str(entry, "needed_for" if "needed_for" in entry else "used_by", where),
        install=_str(entry, "install" if "install" in entry else "provisioned_by", where),
        namespaces=_strs(entry, "namespaces", where),
        keys=_strs(entry, "keys", where),
        labels=tuple((str(k), str(v)) for k, v in labels.items()),
        store_kind=str(entry.get("kind") or "") if kind == "SecretStore" else "",
    )


def _cluster(entry: Any, where: str) -> Cluster:
    if not isinstance(entry, dict) or not isinstance(entry.get("storage_class"), dict):
        raise PrerequisitesError(f"{where}: needs `storage_class`, `priority_classes` and `secret_stores`")
    sc = entry["storage_class"]
    return Cluster(
        rwx_access_mode=_str(sc, "access_mode", f"{where}.storage_class"),
        rwx_needed_for=_str(sc, "needed_for", f"{where}.storage_class"),
        rwx_install=_str(sc, "install", f"{where}.storage_class"),
        rwx_provisioners=_strs(sc, "rwx_provisioners", f"{where}.storage_class"),
        priority_classes=tuple(
            _need(e, "PriorityClass", f"{where}.priority_classes[{i}]")
            for i, e in enumerate(_list(entry, "priority_classes", where))
        ),
        secret_stores=tuple(
            _need(e, "SecretStore", f"{where}.secret_stores[{i}]")
            for i, e in enumerate(_list(entry, "secret_stores", where))
        ),
    )


def load(path: Path) -> Prerequisites:
    """The prerequisites file; PrerequisitesError names what is wrong."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PrerequisitesError(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("components"), list):
        raise PrerequisitesError(f"{path}: needs `kubernetes` (a mapping) and `components` (a list)")
    kubernetes = _component(data.get("kubernetes"), f"{path}: kubernetes")
    components = tuple(_component(c, f"{path}: components[{i}]") for i, c in enumerate(data["components"]))
    names = [c.name for c in (kubernetes, *components)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PrerequisitesError(f"{path}: component(s) listed twice: {', '.join(dupes)}")
    cluster = _cluster(data.get("cluster"), f"{path}: cluster")
    secrets = tuple(
        _need(s, "Secret", f"{path}: secrets[{i}]") for i, s in enumerate(_list(data, "secrets", str(path)))
    )
    return Prerequisites(kubernetes, components, cluster, secrets)


# --- checks -----------------------------------------------------------------------------------


def check_listing(prereqs: Prerequisites, vendored: Iterable[str]) -> list[str]:
    """Each (apiVersion, kind) provided once; each field's kind provided by its entry; CRD kinds vendored."""
    problems = []
    seen: dict[tuple[str, str], str] = {}
    for comp in prereqs.all:
        for api in comp.provides:
            for kind in api.kinds:
                other = seen.setdefault((api.api_version, kind), comp.name)
                if other != comp.name:
                    problems.append(f"{api.api_version} {kind} is listed under both {other} and {comp.name}")
        for f in comp.fields:
            if prereqs.provider(f.api_version, f.kind) is not comp:
                problems.append(
                    f"{comp.name}: field {f.path} of {f.api_version} {f.kind}, a kind {comp.name} does not provide"
                )
    vendored_keys = {crd_schemas.Kind.parse(v) for v in vendored}
    for comp in prereqs.components:
        for api in comp.provides:
            group, _, version = api.api_version.rpartition("/")
            for kind in api.kinds:
                if crd_schemas.Kind(group, kind.lower(), version) not in vendored_keys:
                    problems.append(
                        f"{comp.label}: provides {api.api_version} {kind}, but {SOURCE} does not vendor its schema "
                        f"(add `{group}/{kind.lower()}_{version}` under kinds and regenerate)"
                    )
    return problems


def _not_provided(prereqs: Prerequisites, api_version: str, kind: str) -> str:
    """Why (apiVersion, kind) has no provider, and what to add."""
    other_versions = [(c, a.api_version) for c in prereqs.all for a in c.provides if kind in a.kinds]
    if other_versions:
        comp = other_versions[0][0]
        versions = ", ".join(v for _, v in other_versions)
        return (
            f"{comp.label} provides {kind} only as {versions}: add {api_version} to {comp.name} in {PREREQUISITES} "
            f"with the minimum {comp.name} that serves it"
        )
    group = api_version.rpartition("/")[0]
    same_group = [
        f"{c.label} provides {a.api_version} {', '.join(a.kinds)}"
        for c in prereqs.all
        for a in c.provides
        if a.api_version.rpartition("/")[0] == group
    ]
    hint = "; ".join(same_group) or f"no entry provides API group {group or '(core)'}"
    return (
        f"no entry of {PREREQUISITES} provides it ({hint}): add the component that serves it, with its minimum version"
    )


def check_kinds(prereqs: Prerequisites, kinds_by_target: Mapping[str, Collection[tuple[str, str]]]) -> list[str]:
    """Every (apiVersion, kind) of every target (an env, a chart app, `argocd`, SOURCE.yaml) is provided."""
    targets: dict[tuple[str, str], list[str]] = {}
    for target, kinds in kinds_by_target.items():
        for key in kinds:
            if target not in targets.setdefault(key, []):
                targets[key].append(target)
    return [
        f"{', '.join(sorted(where))}: {kind} ({api_version}): {_not_provided(prereqs, api_version, kind)}"
        for (api_version, kind), where in sorted(targets.items())
        if prereqs.provider(api_version, kind) is None
    ]


def _definitions_registry(schema_dir: str) -> referencing.Registry[Any]:
    # The same bundle and layout pipeline.checks.validate.CoreValidator reads.
    root = importlib_resources.files("kubernetes_validate") / "kubernetes-json-schema" / schema_dir
    defs = json.loads((root / "_definitions.json").read_text())
    resource: referencing.Resource[Any] = referencing.Resource.from_contents(defs, default_specification=DRAFT202012)
    return resource @ referencing.Registry()


# (schema node, the referencing resolver its $refs resolve against; the Resolver class is not exported)
Node = tuple[Any, Any]


def _deref(node: Any, resolver: Any) -> Node:
    while isinstance(node, dict) and "$ref" in node:
        try:
            resolved = resolver.lookup(str(node["$ref"]))
        except Unresolvable:
            return None, resolver
        node, resolver = resolved.contents, resolved.resolver
    return node, resolver


def _branches(nodes: Iterable[Node]) -> list[Node]:
    """The schemas a value at these nodes must satisfy: each node, $ref resolved, and its allOf/anyOf/oneOf."""
    out: list[Node] = []
    for raw, raw_resolver in nodes:
        node, resolver = _deref(raw, raw_resolver)
        if not isinstance(node, dict):
            continue
        out.append((node, resolver))
        for key in ("allOf", "anyOf", "oneOf"):
            out += _branches((b, resolver) for b in node.get(key) or [])
    return out


def find_field(schema: Mapping[str, Any], path: str, registry: referencing.Registry[Any] | None = None) -> str | None:
    """None if the dotted path (`a.b[].c`, `[]` = the items of a list) exists in the JSON schema, else what is missing."""
    nodes: list[Node] = [(schema, (registry or referencing.Registry()).resolver(base_uri=str(schema.get("$id", ""))))]
    walked = ""
    for part in path.split("."):
        name = part.removesuffix("[]")
        nodes = [(n["properties"][name], r) for n, r in _branches(nodes) if name in (n.get("properties") or {})]
        if not nodes:
            return f"no `{name}` under {walked or '(root)'}"
        if part.endswith("[]"):
            nodes = [(n["items"], r) for n, r in _branches(nodes) if isinstance(n.get("items"), dict)]
            if not nodes:
                return f"{walked + '.' if walked else ''}{name} is not a list"
        walked = f"{walked}.{part}" if walked else part
    return None


def check_fields(prereqs: Prerequisites, crds: validate.CrdSchemas) -> list[str]:
    """Each version-gated field exists in the schema render validates against."""
    problems = []
    try:
        core = validate.CoreValidator(prereqs.kubernetes.minimum)
    except ValueError as exc:
        return [f"{prereqs.kubernetes.label}: {exc}"]
    registry = _definitions_registry(core.schema_dir)
    for comp in prereqs.all:
        for f in comp.fields:
            doc = {"apiVersion": f.api_version, "kind": f.kind}
            if comp is prereqs.kubernetes:
                validator, where, reg = core.validator(doc), f"the Kubernetes {comp.minimum} API schema", registry
            else:
                validator, where, reg = crds.validator(doc), f"the CRD schemas at {crds.location}", None
            if validator is None:
                problems.append(f"{comp.label}: no schema for {f.api_version} {f.kind} in {where}")
                continue
            missing = find_field(validator.schema, f.path, reg)
            if missing is None:
                continue
            if comp is prereqs.kubernetes:
                fix = f"the field needs Kubernetes {f.since}: raise the minimum (and the charts' kubeVersion)"
            else:
                fix = (
                    f"the field needs {comp.name} {f.since}, so the schema predates it: regenerate it from a catalog "
                    f"of {comp.name} >= {comp.minimum} (`make crd-schemas`)"
                )
            problems.append(
                f"{comp.label}: {f.kind} ({f.api_version}) has no field {f.path} in {where} ({missing}); {fix}"
            )
    return problems


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"v?(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_kubernetes(prereqs: Prerequisites, charts: Path) -> list[str]:
    """Every chart states a kubeVersion lower bound, the highest equals the minimum; listed kinds are served."""
    k8s = prereqs.kubernetes
    want = _minor(k8s.minimum)
    if want is None:
        return [f"{k8s.name}: minimum {k8s.minimum!r} is not <major>.<minor>"]
    problems = []
    bounds: dict[str, tuple[int, int]] = {}
    for chart_yaml in sorted(charts.glob("*/Chart.yaml")):
        rel = f"{charts.name}/{chart_yaml.parent.name}/Chart.yaml"
        constraint = str((yaml.safe_load(chart_yaml.read_text()) or {}).get("kubeVersion") or "")
        m = _KUBE_VERSION_RE.search(constraint)
        if not m:
            problems.append(
                f"{rel}: kubeVersion {constraint or '(none)'} states no lower bound (want >={k8s.minimum}.0-0)"
            )
            continue
        bounds[rel] = (int(m.group(1)), int(m.group(2)))
        if bounds[rel] > want:
            problems.append(f"{rel}: kubeVersion {constraint} needs more than the stated {k8s.label}")
    if bounds and max(bounds.values()) < want:
        problems.append(
            f"{k8s.label} is stated, but no chart's kubeVersion asks for it (highest lower bound "
            f"{'.'.join(map(str, max(bounds.values())))}): raise the chart's kubeVersion or lower the minimum"
        )
    try:
        core = validate.CoreValidator(k8s.minimum)
    except ValueError as exc:
        return [*problems, f"{k8s.label}: {exc}"]
    for api in k8s.provides:
        for kind in api.kinds:
            if not core.is_core({"apiVersion": api.api_version, "kind": kind}):
                problems.append(
                    f"{k8s.label}: {kind} ({api.api_version}) is listed, but Kubernetes {k8s.minimum} does not serve it"
                )
    return problems


def object_kinds(docs: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(str(d.get("apiVersion", "")), str(d.get("kind", ""))) for d in docs}


def vendored_kinds(root: Path) -> list[str]:
    """`<group>/<kind>_<version>` of every schema vendored in policies/crd-schemas (SOURCE.yaml)."""
    return [str(k) for k in crd_schemas.load_manifest((root / SOURCE).parent)["kinds"]]


def vendored_as_kinds(prereqs: Prerequisites, vendored: Iterable[str]) -> set[tuple[str, str]]:
    """(apiVersion, Kind) of vendored schemas, the kind spelled as listed (the catalog lower-cases it)."""
    listed = {(a.api_version, k.lower()): k for c in prereqs.all for a in c.provides for k in a.kinds}
    any_version = {k.lower(): k for c in prereqs.all for a in c.provides for k in a.kinds}
    out = set()
    for k in map(crd_schemas.Kind.parse, vendored):
        api_version = f"{k.group}/{k.version}"
        out.add((api_version, listed.get((api_version, k.kind)) or any_version.get(k.kind) or k.kind))
    return out


def check(
    root: Path,
    kinds_by_target: Mapping[str, Collection[tuple[str, str]]],
    crds: validate.CrdSchemas,
    path: Path | None = None,
) -> tuple[list[str], str]:
    """Problems (empty when everything holds) and a one-line summary of what was checked."""
    path = path or root / PREREQUISITES
    try:
        prereqs = load(path)
        vendored = vendored_kinds(root)
    except (PrerequisitesError, crd_schemas.CrdSchemaError) as exc:
        return [str(exc)], ""
    vendored_targets = {str(SOURCE): vendored_as_kinds(prereqs, vendored)}
    problems = (
        check_listing(prereqs, vendored)
        + check_kinds(prereqs, {**kinds_by_target, **vendored_targets})
        + check_fields(prereqs, crds)
        + check_kubernetes(prereqs, root / CHARTS)
    )
    kinds = {k for ks in kinds_by_target.values() for k in ks}
    fields = sum(len(c.fields) for c in prereqs.all)
    summary = (
        f"{len(kinds)} kinds in {len(kinds_by_target)} targets provided by {len(prereqs.all)} entries of {PREREQUISITES}; "
        f"{fields} version-gated fields present; {prereqs.kubernetes.label} agrees with the charts' kubeVersion"
    )
    return problems, summary


# --- the documented table ---------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(prereqs: Prerequisites) -> str:
    """The table and the reasons, as docs/prerequisites.md carries them between its markers."""
    lines = [
        "| component | minimum | needed for | APIs it provides here |",
        "|---|---|---|---|",
    ]
    for c in prereqs.all:
        apis = "<br>".join(f"`{a.api_version}`: {', '.join(a.kinds)}" for a in c.provides) or "—"
        lines.append(f"| {_cell(c.name)} | `{c.minimum}` | {_cell(c.needed_for)} | {apis} |")
    for c in prereqs.all:
        lines += ["", f"### {c.name} ≥ {c.minimum}", "", c.why]
        if c.fields:
            lines += ["", "Version-gated fields (must exist in the schema render validates against):", ""]
            lines += [f"- `{f.kind}` (`{f.api_version}`) `{f.path}` — since {f.since}" for f in c.fields]
        lines += ["", f"Install: {c.install}"]
        lines += ["", "References:", ""]
        lines += [f"- [{r.title}]({r.url})" for r in c.references]
    if prereqs.cluster:
        cl = prereqs.cluster
        lines += ["", "### The cluster", ""]
        lines.append(
            f"- a StorageClass serving `{cl.rwx_access_mode}`: {cl.rwx_needed_for}. Install: {cl.rwx_install}."
        )
        lines += [f"- PriorityClass `{n.name}`: {n.needed_for}. Install: `{n.install}`" for n in cl.priority_classes]
        lines += [
            f"- {n.store_kind} `{n.name}` (Ready): {n.needed_for}. Install: {n.install}" for n in cl.secret_stores
        ]
    if prereqs.secrets:
        lines += ["", "### Secrets nothing creates unconditionally", ""]
        lines += ["| object | namespaces | keys | read by | provisioned by |", "|---|---|---|---|---|"]
        lines += [
            f"| {s.kind} `{s.name}` | {', '.join(s.namespaces)} | {', '.join(f'`{k}`' for k in s.keys)} "
            f"| {_cell(s.needed_for)} | {_cell(s.install)} |"
            for s in prereqs.secrets
        ]
    return "\n".join(lines) + "\n"


def documented(doc: str) -> str | None:
    """The generated part of docs/prerequisites.md (between the markers), or None without markers."""
    begin, end = doc.find(DOC_BEGIN), doc.find(DOC_END)
    if begin < 0 or end < begin:
        return None
    return doc[begin + len(DOC_BEGIN) : end].strip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the Markdown for docs/prerequisites.md, or (--write) replace it between the doc's markers."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.checks.prerequisites", description=main.__doc__)
    parser.add_argument("--file", type=Path, default=REPO_ROOT / PREREQUISITES, help="default: %(default)s")
    parser.add_argument("--write", action="store_true", help=f"update {DOC} in place instead of printing")
    args = parser.parse_args(argv)
    try:
        text = markdown(load(args.file))
    except PrerequisitesError as exc:
        print(f"prerequisites: {exc}", file=sys.stderr)
        return 2
    if not args.write:
        sys.stdout.write(text)
        return 0
    doc_path = REPO_ROOT / DOC
    doc = doc_path.read_text()
    if documented(doc) is None:
        print(f"prerequisites: {doc_path} has no {DOC_BEGIN} ... {DOC_END} markers", file=sys.stderr)
        return 2
    head, _, rest = doc.partition(DOC_BEGIN)
    doc_path.write_text(f"{head}{DOC_BEGIN}\n{text}{DOC_END}{rest.partition(DOC_END)[2]}")
    print(f"wrote {doc_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
