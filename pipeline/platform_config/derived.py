"""Every file derived from platform.yaml, and how: one fixer per file that sets the values the
platform decides. `check` runs the fixers in memory and reports what would change; `apply` writes.

One code path for both, so a file can never pass the check and still disagree with what apply
writes. YAML is edited round-trip (ruamel.yaml: comments and layout stay) and compared as data,
so a file is rewritten only when a value changes.
"""

from __future__ import annotations

import copy
import difflib
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from pipeline.core.platform import Platform

_HEX40 = re.compile(r"^[0-9a-f]{40}$")


def round_trip_yaml() -> YAML:
    """ruamel round-trip with the repo's layout (Helm-style indents, no re-wrapping)."""
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096
    return y


@dataclass
class Ctx:
    """What a fixer needs: the platform and the env renames (every env name the tree had → its new
    name, by position in the promotion order; identity when nothing is renamed)."""

    platform: Platform
    renames: dict[str, str] = field(default_factory=dict)

    def renamed(self, env: str) -> str:
        return self.renames.get(env, env)


def _set(node: Any, path: Iterable[str | int], value: Any) -> None:
    """Set node[path] = value when the key path exists (missing parents: left alone; an optional
    block such as `ingress` in an env overlay is not created by the platform)."""
    keys = list(path)
    for key in keys[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    last = keys[-1]
    if isinstance(node, dict) and last in node and node[last] != value:
        node[last] = value


def _set_seq(node: Any, path: Iterable[str | int], values: list[Any]) -> None:
    """Replace a list's items in place (keeps the list's flow/block style and comments)."""
    keys = list(path)
    for key in keys:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, list) and list(node) != values:
        if len(node) == len(values):  # item by item: comments between items stay
            for i, v in enumerate(values):
                if node[i] != v:
                    node[i] = v
        else:
            node[:] = values


def _rename_keys(mapping: Any, ctx: Ctx) -> None:
    """Rename env-named keys of a mapping in place, keeping their order."""
    if not isinstance(mapping, dict) or not any(k in ctx.renames and ctx.renames[k] != k for k in mapping):
        return
    items = [(ctx.renamed(k), v) for k, v in mapping.items()]
    for k in list(mapping):
        del mapping[k]
    for k, v in items:
        mapping[k] = v


# --- the charts -------------------------------------------------------------------------------


def chart_values(doc: Any, ctx: Ctx) -> None:
    p = ctx.platform
    doc["labelDomain"] = p.label_domain
    _set(doc, ("environment",), p.env_names[0])  # the chart's default env: the first (the schema's enum)
    _set(doc, ("gateway", "image", "repository"), p.image("gateway"))
    _set(doc, ("vllm", "image", "repository"), p.image("vllm"))
    _set(doc, ("gateway", "config", "jwtJwks"), p.idp.jwks_url)
    _set(doc, ("gateway", "config", "jwtIssuer"), p.idp.issuer)
    _set(doc, ("gateway", "config", "jwtAudience"), p.idp.audience)
    _set(doc, ("vllm", "model", "servedModelName"), p.model.served_name)
    # The gateway fronts one model: every role may use it (a role's other limits stay).
    for role in (doc.get("gateway", {}).get("rbac", {}).get("roles") or {}).values():
        if isinstance(role, dict) and "models" in role:
            _set_seq(role, ("models",), [p.model.served_name])
    _set(doc, ("ingress", "host"), p.production.host)
    _set_seq(doc, ("httpRoute", "hostnames"), [p.production.host])
    _set(doc, ("monitoring", "runbookBaseUrl"), runbook_base(p))
    _set(doc, ("scheduling", "spot", "nodeLabel", "key"), p.nodes.spot_label)
    _set(doc, ("scheduling", "spot", "taint", "key"), p.nodes.spot_taint)


def runbook_base(p: Platform) -> str:
    return f"{p.homepage}/blob/{p.git.branch}/docs/runbooks"


def chart_schema(doc: Any, ctx: Ctx) -> None:
    _set_seq(doc, ("properties", "environment", "enum"), list(ctx.platform.env_names))


def chart_meta(doc: Any, ctx: Ctx) -> None:
    p = ctx.platform
    _set(doc, ("home",), p.homepage)
    _set_seq(doc, ("sources",), [p.homepage])
    for maintainer in doc.get("maintainers") or []:
        _set(maintainer, ("email",), p.contact)


def rollback_chart_values(doc: Any, ctx: Ctx) -> None:
    _set(doc, ("image", "repository"), ctx.platform.image("pipeline"))
    _set(doc, ("labelDomain",), ctx.platform.label_domain)
    # Alerts of every env reach the controller (AlertmanagerConfig matcher) and it may roll each back.
    _set_seq(doc, ("controller", "envs"), list(ctx.platform.env_names))
    for matcher in doc.get("alertmanagerConfig", {}).get("matchers") or []:
        if isinstance(matcher, dict) and matcher.get("name") == "env" and matcher.get("matchType") == "=~":
            _set(matcher, ("value",), "|".join(ctx.platform.env_names))
    for block in doc.values():
        if isinstance(block, dict):
            _set(block, ("runbookBaseUrl",), runbook_base(ctx.platform))


# --- Argo CD objects --------------------------------------------------------------------------


def rollback_app_values(doc: Any, ctx: Ctx) -> None:
    p = ctx.platform
    _set(doc, ("image", "repository"), p.image("pipeline"))
    _set(doc, ("gitops", "repoURL"), p.git.ssh_url)
    _set(doc, ("gitops", "branch"), p.git.branch)


def _git_source(source: Any, ctx: Ctx) -> None:
    """A source of the GitOps repo (no `chart:`): its URL, and the branch unless pinned to a commit."""
    if not isinstance(source, dict) or "chart" in source:
        return
    _set(source, ("repoURL",), ctx.platform.git.url)
    rev = source.get("targetRevision")
    if isinstance(rev, str) and not _HEX40.match(rev) and "{{" not in rev:
        _set(source, ("targetRevision",), ctx.platform.git.branch)


def application(doc: Any, ctx: Ctx) -> None:
    spec = doc.get("spec", {})
    _git_source(spec.get("source"), ctx)
    for source in spec.get("sources") or []:
        _git_source(source, ctx)


def _env_app(name: str, ctx: Ctx) -> str:
    m = re.fullmatch(r"llm-service-(.+)", name)
    return f"llm-service-{ctx.renamed(m.group(1))}" if m else name


def appproject(doc: Any, ctx: Ctx) -> None:
    p = ctx.platform
    spec = doc.get("spec", {})
    repos = list(spec.get("sourceRepos") or [])
    wanted = [p.git.url] + ([p.chart_repo] if len(repos) > 1 else [])
    _set_seq(spec, ("sourceRepos",), wanted)
    dests = spec.get("destinations") or []
    if any(d.get("namespace") != "argocd" for d in dests):
        # The env namespaces first (platform order), then what is not an env's (the controller's).
        env_namespaces = {e.namespace for e in p.environments}
        others = [d for d in dests if not _is_env_destination(d, ctx, env_namespaces)]
        envs = [CommentedMap([("server", e.cluster), ("namespace", e.namespace)]) for e in p.environments]
        _set_seq(spec, ("destinations",), envs + others)
    for window in spec.get("syncWindows") or []:
        if "applications" in window:
            _set_seq(window, ("applications",), [_env_app(a, ctx) for a in window["applications"]])


def _is_env_destination(dest: Any, ctx: Ctx, env_namespaces: set[str]) -> bool:
    """An env's destination (replaced from platform.yaml), not another app's (the controller's)."""
    ns = str(dest.get("namespace", ""))
    return ns in env_namespaces or any(ns == old or ns.endswith(f"-{old}") for old in ctx.renames)


def applicationset(doc: Any, ctx: Ctx) -> None:
    p = ctx.platform
    spec = doc.get("spec", {})
    for gen in _git_generators(spec.get("generators") or []):
        _set(gen, ("repoURL",), p.git.url)
        rev = gen.get("revision")
        if isinstance(rev, str) and not _HEX40.match(rev):
            _set(gen, ("revision",), p.git.branch)
        _set(gen, ("values", "branch"), p.git.branch)
        for f in gen.get("files") or []:
            _set(f, ("path",), _env_path(str(f.get("path", "")), ctx))
    template = spec.get("template", {})
    labels = template.get("metadata", {}).get("labels")
    if isinstance(labels, dict):
        _relabel(labels, "environment", p.label("environment"))
    tspec = template.get("spec", {})
    for source in tspec.get("sources") or []:
        if "chart" in source:
            _set(source, ("repoURL",), p.chart_repo)
        else:
            _set(source, ("repoURL",), p.git.url)
        for key in ("targetRevision",):
            if isinstance(source.get(key), str):
                _set(source, (key,), _production_expr(source[key], p))
    dest = tspec.get("destination")
    if isinstance(dest, dict):
        dest["server"], dest["namespace"] = _destination_exprs(p)


def _git_generators(generators: list[Any]) -> Iterable[dict[str, Any]]:
    """Git generators at any depth (matrix/merge nest them under `generators`)."""
    for gen in generators:
        if not isinstance(gen, dict):
            continue
        if isinstance(gen.get("git"), dict):
            yield gen["git"]
        for nested in gen.values():
            if isinstance(nested, dict) and isinstance(nested.get("generators"), list):
                yield from _git_generators(nested["generators"])


def _env_path(path: str, ctx: Ctx) -> str:
    m = re.fullmatch(r"environments/([^/*]+)/(.+)", path)
    return f"environments/{ctx.renamed(m.group(1))}/{m.group(2)}" if m else path


def _relabel(labels: dict[str, Any], key: str, wanted: str) -> None:
    """Replace the `<any domain>/<key>` label by `wanted`, keeping its value and place."""
    for k in list(labels):
        if k.endswith(f"/{key}") and k != wanted:
            items = [(wanted if kk == k else kk, v) for kk, v in labels.items()]
            for kk in list(labels):
                del labels[kk]
            for kk, v in items:
                labels[kk] = v


def _relabel_exact(labels: dict[str, Any], old_keys: set[str], wanted: str) -> None:
    """Rename the keys in old_keys to `wanted`, keeping value and place."""
    if not old_keys or old_keys == {wanted}:
        return
    items = [(wanted if k in old_keys else k, v) for k, v in labels.items()]
    for k in list(labels):
        del labels[k]
    for k, v in items:
        labels[k] = v


def _production_expr(expr: str, p: Platform) -> str:
    """A template expression that names the production env (`eq .path.basename "prod"`)."""
    return re.sub(r'(eq \.path\.basename )"[^"]*"', rf'\g<1>"{p.production.name}"', expr)


def _destination_exprs(p: Platform) -> tuple[str, str]:
    """The ApplicationSet's destination as goTemplate expressions: a constant when every env agrees,
    else a lookup by env name (sprig `dict`/`get`, in Argo CD's goTemplate function map)."""
    servers = {e.cluster for e in p.environments}
    server = (
        next(iter(servers))
        if len(servers) == 1
        else "{{ get (dict " + " ".join(f'"{e.name}" "{e.cluster}"' for e in p.environments) + ") .path.basename }}"
    )
    prefixed = all(e.namespace == f"{_ns_prefix(p)}{e.name}" for e in p.environments)
    namespace = (
        f"{_ns_prefix(p)}{{{{ .path.basename }}}}"
        if prefixed
        else "{{ get (dict " + " ".join(f'"{e.name}" "{e.namespace}"' for e in p.environments) + ") .path.basename }}"
    )
    return server, namespace


def _ns_prefix(p: Platform) -> str:
    first = p.environments[0]
    return first.namespace[: -len(first.name)] if first.namespace.endswith(first.name) else "\0"


# --- environments and load tests --------------------------------------------------------------


def env_values(env: str) -> Callable[[Any, Ctx], None]:
    def fix(doc: Any, ctx: Ctx) -> None:
        p = ctx.platform
        e = p.env(env)
        _set(doc, ("environment",), e.name)
        redis = doc.get("gateway", {}).get("config", {}).get("redisUrl")
        if isinstance(redis, str):  # an in-cluster Redis of the env's namespace: <svc>.<namespace>.svc
            _set(
                doc,
                ("gateway", "config", "redisUrl"),
                re.sub(r"^(\w+://[^./@]+)\.[^./]+\.svc\b", rf"\g<1>.{e.namespace}.svc", redis),
            )
        _set(doc, ("vllm", "model", "id"), p.model.id)
        selector = doc.get("scheduling", {}).get("nodeSelector")
        if isinstance(selector, dict):
            # The pool label is the selector's one key that is not Kubernetes' own (kubernetes.io, k8s.io).
            own = [k for k in selector if not re.search(r"(^|\.)(kubernetes|k8s)\.io/", k)]
            if p.nodes.gpu_pool_label not in selector and own:
                _relabel_exact(selector, {own[0]}, p.nodes.gpu_pool_label)
        _set_seq(doc, ("httpRoute", "hostnames"), [e.host])
        _set(doc, ("ingress", "host"), e.host)
        # Secret-manager keys named by env (llm/<env>/gateway) follow a renamed env.
        for path in (("externalSecret", "remoteKey"), ("externalSecret", "hfToken", "remoteKey")):
            node: Any = doc
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, str):
                _set(doc, path, "/".join(ctx.renamed(part) for part in node.split("/")))
        if doc.get("ingress", {}).get("tlsSecretName"):
            _set(doc, ("ingress", "tlsSecretName"), tls_secret(e.host))

    return fix


def env_release(doc: Any, ctx: Ctx) -> None:
    # The release pins the model revision; a new model (platform.yaml) starts from its revision.
    _set(doc, ("vllm", "model", "revision"), ctx.platform.model.revision)


def slo(env: str) -> Callable[[Any, Ctx], None]:
    def fix(doc: Any, ctx: Ctx) -> None:
        _set(doc, ("env",), env)

    return fix


def model_record(doc: Any, ctx: Ctx) -> None:
    """app/model.yaml: platform.yaml says WHICH model the organisation serves (id, served name); the
    record owns the revision, which changes release by release (a model-only release is no drift).
    A new model id (init for another model) starts from platform.yaml's revision."""
    model = ctx.platform.model
    if isinstance(doc, dict) and doc.get("id") != model.id:
        _set(doc, ("revision",), model.revision)
        _set(doc, ("tokenizerRevision",), model.revision)
    _set(doc, ("id",), model.id)
    _set(doc, ("servedName",), model.served_name)


def repository_secret(doc: Any, ctx: Ctx) -> None:
    """The Argo CD repository Secret for the OCI chart repository."""
    _set(doc, ("spec", "target", "template", "data", "url"), ctx.platform.chart_repo)


_CHART_REPO = re.compile(r"[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*/charts\b")


def prerequisites(doc: Any, ctx: Ctx) -> None:
    """Secrets every env needs live in every env namespace; prod's TLS secret follows its host."""
    p = ctx.platform
    prod = p.production
    for need in doc.get("secrets") or []:
        namespaces = list(need.get("namespaces") or [])
        if str(need.get("name", "")).endswith("-tls"):
            old_name, old_ns = str(need["name"]), namespaces[0] if namespaces else ""
            new_name = tls_secret(prod.host)
            need["name"] = new_name
            _set_seq(need, ("namespaces",), [prod.namespace])
            for key in ("used_by", "provisioned_by"):
                if isinstance(need.get(key), str):
                    text = need[key].replace(old_name, new_name)
                    text = re.sub(rf"-n {re.escape(old_ns)}\b", f"-n {prod.namespace}", text) if old_ns else text
                    need[key] = re.sub(r"(Certificate for )[a-z0-9.-]+", rf"\g<1>{prod.host}", text)
        elif len(namespaces) > 1:  # per env
            _set_seq(need, ("namespaces",), [e.namespace for e in p.environments])
        for key in ("used_by", "provisioned_by"):
            if isinstance(need.get(key), str) and _CHART_REPO.search(need[key]):
                need[key] = _CHART_REPO.sub(p.chart_repo, need[key])


def tls_secret(host: str) -> str:
    return host.replace(".", "-") + "-tls"


# --- policies ---------------------------------------------------------------------------------


def policy_params(doc: Any, ctx: Ctx) -> None:
    p = ctx.platform
    d = doc["defaults"]
    d["label_domain"] = p.label_domain
    _set_seq(d, ("allowed_registries",), [f"{p.registry_host}/"])
    _set_seq(
        d,
        ("owned_selector_labels",),
        [p.label("instance") if s.endswith("/instance") else s for s in d.get("owned_selector_labels", [])],
    )
    _set_seq(d, ("rollback_envs_required",), list(p.env_names[1:]))
    _rename_keys(doc["environments"], ctx)
    argocd = doc["environments"].get("argocd", {})
    _set_seq(argocd, ("pinned_envs",), [p.production.name])
    _set_seq(argocd, ("chart_repos",), [p.chart_repo])


def promotion_data(doc: Any, ctx: Ctx) -> None:
    envs = ctx.platform.env_names
    promo = doc["promotion"]
    for value in list(promo.values()):
        if isinstance(value, dict):
            _rename_keys(value, ctx)
    if "allowed_sources" in promo:
        promo["allowed_sources"] = {e: ["ci"] if i == 0 else [envs[i - 1]] for i, e in enumerate(envs)}


def promotion_local(doc: Any, ctx: Ctx) -> None:
    for value in doc["promotion"].values():
        if isinstance(value, dict):
            _rename_keys(value, ctx)


# params.rego's `builtin` mirrors params.yaml (defaults, then the argocd entry) so a policy never
# reads an undefined parameter under conftest without --data; it is generated, never hand-edited.
_BUILTIN = re.compile(r"^builtin := \{\n.*?^\}\n", re.M | re.S)


def params_rego(text: str, ctx: Ctx, params_doc: Any) -> str:
    plain = json.loads(json.dumps(params_doc))
    builtin = dict(plain["defaults"])
    for k, v in plain["environments"].get("argocd", {}).items():
        builtin.setdefault(k, v)
    body = json.dumps(builtin, indent="\t", ensure_ascii=False)
    # Rego object syntax = JSON; a trailing comma per item keeps future diffs one line.
    body = re.sub(r'([}\]"0-9el])\n', r"\1,\n", body[:-1]) + "}"
    block = f"builtin := {body}\n"
    return _BUILTIN.sub(lambda _m: block, text, count=1)


# --- the table --------------------------------------------------------------------------------

YamlFixer = Callable[[Any, Ctx], None]


def yaml_files(p: Platform) -> dict[str, YamlFixer]:
    files: dict[str, YamlFixer] = {
        "charts/llm-service/values.yaml": chart_values,
        "charts/llm-service/Chart.yaml": chart_meta,
        "charts/rollback-controller/values.yaml": rollback_chart_values,
        "environments/argocd/rollback-controller-values.yaml": rollback_app_values,
        "environments/argocd/application-root.yaml": application,
        "environments/argocd/application-rollback-controller.yaml": application,
        "environments/argocd/appproject-llm-platform.yaml": appproject,
        "environments/argocd/appproject-llm-service.yaml": appproject,
        "environments/argocd/applicationset-llm-service.yaml": applicationset,
        "environments/argocd/externalsecret-repository-charts.yaml": repository_secret,
        "app/model.yaml": model_record,
        "policies/params.yaml": policy_params,
        "policies/prerequisites.yaml": prerequisites,
    }
    for env in p.env_names:
        files[f"environments/{env}/values.yaml"] = env_values(env)
        files[f"environments/{env}/release.yaml"] = env_release
        files[f"loadtests/slo/{env}.yaml"] = slo(env)
    return files


JSON_FILES: dict[str, Callable[[Any, Ctx], None]] = {
    "charts/llm-service/values.schema.json": chart_schema,
    "policies/promotion.data.json": promotion_data,
    "policies/promotion.local.json": promotion_local,
}
PARAMS_REGO = "policies/lib/params.rego"


def slo_schema(text: str, ctx: Ctx) -> str:
    """loadtests/slo/schema.json's env enum (a text edit: the file's compact layout stays)."""
    names = ", ".join(json.dumps(e) for e in ctx.platform.env_names)
    return re.sub(r'("env": \{"type": "string", "enum": \[)[^\]]*(\]\})', rf"\g<1>{names}\g<2>", text, count=1)


TEXT_FILES: dict[str, Callable[[str, Ctx], str]] = {"loadtests/slo/schema.json": slo_schema}


@dataclass
class Change:
    """One derived file whose content differs from what platform.yaml gives."""

    path: str
    new_text: str | None  # None: the file is missing
    diff: str


def _dump(doc: Any) -> str:
    buf = io.StringIO()
    round_trip_yaml().dump(doc, buf)
    return buf.getvalue()


def derive(root: Path, platform: Platform, renames: dict[str, str] | None = None) -> list[Change]:
    """Every derived file whose content would change, with its new text (nothing is written).
    With `renames`, the tree is read under the OLD env names (apply moves the files first)."""
    ctx = Ctx(platform, dict(renames or {}))
    changes: list[Change] = []
    params_doc: Any = None
    prereq_text: str | None = None
    for rel, fix in yaml_files(platform).items():
        path = root / rel
        if not path.is_file():
            changes.append(Change(rel, None, f"{rel}: missing (platform.yaml environment)"))
            continue
        text = path.read_text()
        doc = round_trip_yaml().load(text)
        before = copy.deepcopy(_plain(doc))
        fix(doc, ctx)
        if rel == "policies/params.yaml":
            params_doc = doc
        new = _dump(doc) if _plain(doc) != before else text
        if rel == "policies/prerequisites.yaml":
            prereq_text = new
        if new is not text:
            changes.append(Change(rel, new, _diff(rel, text, new)))
    for rel, jfix in JSON_FILES.items():
        path = root / rel
        text = path.read_text()
        data = json.loads(text)
        before = copy.deepcopy(data)
        jfix(data, ctx)
        if data != before:
            new = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
            changes.append(Change(rel, new, _diff(rel, text, new)))
    for rel, tfix in TEXT_FILES.items():
        text = (root / rel).read_text()
        new = tfix(text, ctx)
        if new != text:
            changes.append(Change(rel, new, _diff(rel, text, new)))
    if params_doc is not None:
        text = (root / PARAMS_REGO).read_text()
        new = params_rego(text, ctx, params_doc)
        if _builtin_data(new) != _builtin_data(text):
            changes.append(Change(PARAMS_REGO, new, _diff(PARAMS_REGO, text, new)))
    if prereq_text is not None and (root / PREREQ_DOC).is_file():
        text = (root / PREREQ_DOC).read_text()
        new = prerequisites_doc(text, prereq_text)
        if new != text:
            changes.append(Change(PREREQ_DOC, new, _diff(PREREQ_DOC, text, new)))
    return changes


PREREQ_DOC = "docs/prerequisites.md"


def prerequisites_doc(doc: str, prereq_yaml: str) -> str:
    """docs/prerequisites.md with its generated part made from `prereq_yaml`."""
    import tempfile

    from pipeline.checks import prerequisites as prereq

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(prereq_yaml)
        f.flush()
        table = prereq.markdown(prereq.load(Path(f.name)))
    if prereq.documented(doc) is None:
        return doc
    head, _, rest = doc.partition(prereq.DOC_BEGIN)
    return f"{head}{prereq.DOC_BEGIN}\n{table}{prereq.DOC_END}{rest.partition(prereq.DOC_END)[2]}"


def _builtin_data(rego: str) -> Any:
    """params.rego's builtin as data: Rego's `raw strings` and a trailing comma are its only non-JSON."""
    m = _BUILTIN.search(rego)
    if not m:
        return None
    body = m.group(0)[len("builtin := ") :]
    body = re.sub(r"`([^`]*)`", lambda s: json.dumps(s.group(1)), body)
    body = re.sub(r",(\s*[}\]])", r"\1", body)
    return json.loads(body)


def _plain(doc: Any) -> Any:
    return yaml.safe_load(_dump(doc)) if isinstance(doc, CommentedMap | CommentedSeq) else doc


def _diff(rel: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{rel}", f"b/{rel}", n=0))


def problems(root: Path) -> list[str]:
    """One line per derived file that disagrees with platform.yaml (the render stage's check)."""
    from pipeline.core.platform import PlatformError, load_platform

    try:
        platform = load_platform(root)
        changes = derive(root, platform, {e: e for e in platform.env_names})
    except (PlatformError, OSError, ValueError, KeyError) as exc:
        return [f"platform.yaml: {exc}"]
    lines = []
    for change in changes:
        detail = [ln for ln in change.diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")][:4]
        lines.append(
            f"{change.path} disagrees with platform.yaml (python -m pipeline init --apply): {' | '.join(detail)}"
        )
    return lines
