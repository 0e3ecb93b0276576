"""A stand-in for argocd-server's REST API and the two controllers behind it, argued from Argo CD's source.

No Argo CD can run here (no Kubernetes API server, no Go toolchain), yet the rollback controller's
sync requests must be ones a real argocd-server accepts. This server on 127.0.0.1 implements only
what the controller and `status` use, and each rule names the upstream file it mirrors (Argo CD
v3.x, server/application/application.go unless said otherwise). It is at least as strict as the
real server: a request the real one refuses is refused here, with the same HTTP status and gRPC code.

- Body decoding (util/grpc/json.go `JSONMarshaler.NewDecoder` = Go encoding/json into
  `ApplicationSyncRequest`, pkg/apiclient/application/application.pb.go): Go types exactly — a string
  where `[]int64` is declared is 400 InvalidArgument; unknown fields are ignored and field names match
  case-insensitively, as encoding/json does.
- Authentication: exactly `Authorization: Bearer <token>` (server/server.go `getToken`); a token the
  stand-in did not issue, or whose role is gone from its AppProject, is 401 Unauthenticated (stricter:
  the real server checks `status.jwtTokensByRole`, util/session/sessionmanager.go, and answers a token
  of a deleted role with 403 once its policies are gone).
- RBAC (server/rbacpolicy/rbacpolicy.go `EnforceClaims` → `enforceProjectToken`): a `proj:<p>:<role>`
  subject is judged only by the policies of project <p>, and only on objects of <p>; the casbin model
  is assets/model.conf (glob match on res/act/obj, an explicit deny wins). The AppProject's policies
  must pass `validatePolicy` (pkg/apis/application/v1alpha1/types.go) or the project is refused.
- Order of `Server.Sync`: `get` on the app (`getAppEnforceRBAC`: an unknown app, or one the caller may
  not get, is 403 "permission denied" when the request names no project); then the sync windows
  (`proj.Spec.SyncWindows.Matches(a).CanSync(true)` → 403 "cannot sync: blocked by sync window"); then
  `sync` (403 `EnforceErr` message); local `manifests` need `override` and are refused on an automated
  app; then `resolveSourceRevisions`: a position outside the sources is an
  untyped error (HTTP 500, code 2), a requested revision that differs from a source's
  `targetRevision` needs `override` when required and is 400 FailedPrecondition ("auto-sync currently
  set to ...") on an automated app; then `argo.SetAppOperation` (util/argo/argo.go): an operation
  already set is 400 FailedPrecondition "another operation is already in progress".
- The operation runs asynchronously (controller/appcontroller.go); a multi-source Application then
  reports `status.sync.revisions[]` and leaves `status.sync.revision` empty (controller/state.go).
  A branch `targetRevision` is resolved when the sync is requested (`resolveRevision`, no cache).
- Application specs come from the ApplicationSet the root app last applied (applicationset/generators/
  git.go): the caller's `generate` says what the ApplicationSet controller would write; regeneration
  happens `appset_lag` seconds after the root app syncs (the ApplicationSet object changed) and every
  `requeue` seconds (the git generator's requeueAfterSeconds, 180 s by default). One failing generator
  fails the whole generation (applicationset/controllers/template/template.go `GenerateApplications`
  returns its first error; applicationset_controller.go `Reconcile` then sets the ErrorOccurred
  condition and returns before creating, updating or deleting any Application: argo-cd#19586).
- `GET .../resource-tree` (`ResourceTree`, `get` on the app as above) lists the app's live objects (`App.live`,
  set by the caller for the cluster there is not); a Rollout's health is Argo CD's built-in
  resource_customizations/argoproj.io/Rollout/health.lua, ported in pipeline/gitops/argocd_rollout.py.
  JSON as encoding/json writes the v1alpha1 types: every ResourceRef/ApplicationTree field is `omitempty`.
- A GET's `appNamespace`/`project` query (`getAppEnforceRBAC`): only the server's namespace is enabled (any
  other is 403, `isNamespaceEnabled`); with `project`, a project the caller may not `get` in is 403, and an
  unknown app, one the caller may not get, or one in another project is 404 NotFound.
Errors are written as the gRPC gateway writes a status: `{"error", "code", "message"}`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipeline.checks import validate
from pipeline.core.platform import repo_platform
from pipeline.gitops.argocd_pin import PIN_FILE
from pipeline.gitops.argocd_rollout import argocd_health
from pipeline.gitops.repo import GitOpsError, git, load_yaml_text
from pipeline.gitops.sync_windows import AppIdentity, can_sync, window_matches

# google.golang.org/grpc/codes, and the HTTP status grpc-gateway maps each to (runtime/errors.go).
UNKNOWN, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, UNAUTHENTICATED = 2, 3, 5, 7, 9, 16
# The namespace argocd-server runs in, the only one whose Applications it serves (no `application.namespaces`).
SERVER_NAMESPACE = "argocd"
HTTP_STATUS = {UNKNOWN: 500, INVALID_ARGUMENT: 400, NOT_FOUND: 404, PERMISSION_DENIED: 403, 9: 400, 16: 401}

# Go types of ApplicationSyncRequest (pkg/apiclient/application/application.pb.go) and of the
# v1alpha1 types it embeds (pkg/apis/application/v1alpha1/types.go): SyncStrategy{Apply,Hook},
# SyncStrategyHook inlines SyncStrategyApply{Force}, SyncOperationResource, Info, RetryStrategy{Backoff}.
GoType = str | tuple[str, Any] | Mapping[str, Any]
_APPLY: Mapping[str, GoType] = {"force": "bool"}
SYNC_REQUEST: Mapping[str, GoType] = {
    "name": "string",
    "revision": "string",
    "dryRun": "bool",
    "prune": "bool",
    "strategy": {"apply": _APPLY, "hook": _APPLY},
    "resources": ("list", {"group": "string", "kind": "string", "name": "string", "namespace": "string"}),
    "manifests": ("list", "string"),
    "infos": ("list", {"name": "string", "value": "string"}),
    "retryStrategy": {
        "limit": "int64",
        "backoff": {"duration": "string", "factor": "int64", "maxDuration": "string"},
        "refresh": "bool",
    },
    "syncOptions": {"items": ("list", "string")},
    "appNamespace": "string",
    "project": "string",
    "sourcePositions": ("list", "int64"),
    "revisions": ("list", "string"),
}


class GoDecodeError(ValueError):
    pass


class _Float(str):
    """A JSON number literal with a fraction or exponent: Go refuses it for an integer field."""


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, _Float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def go_decode(value: Any, spec: GoType, where: str) -> Any:
    """Decode like encoding/json into a Go value of type `spec`; raise what json.Unmarshal reports."""
    if value is None:  # null leaves the zero value: never an error
        return None

    def refuse(go: str) -> GoDecodeError:
        shown = f"number {value}" if isinstance(value, _Float) else _json_kind(value)
        return GoDecodeError(f"json: cannot unmarshal {shown} into Go struct field {where} of type {go}")

    if spec == "string":
        if not isinstance(value, str) or isinstance(value, _Float):
            raise refuse("string")
        return value
    if spec == "bool":
        if not isinstance(value, bool):
            raise refuse("bool")
        return value
    if spec == "int64":
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise refuse("int64")
        return value
    if isinstance(spec, tuple):
        if not isinstance(value, list):
            raise refuse(f"[]{spec[1] if isinstance(spec[1], str) else 'struct'}")
        zero = {"string": "", "bool": False, "int64": 0}.get(spec[1]) if isinstance(spec[1], str) else {}
        # A null element is the element type's zero value (an int64 0 is then an out-of-range position).
        return [zero if v is None else go_decode(v, spec[1], where) for v in value]
    if not isinstance(value, dict) or not isinstance(spec, Mapping):
        raise refuse("struct")
    out: dict[str, Any] = {}
    for key, item in value.items():
        # Exact name first, else a case-insensitive match; unknown keys are ignored.
        name = key if key in spec else next((k for k in spec if k.lower() == key.lower()), None)
        if name is not None:
            out[name] = go_decode(item, spec[name], f"{where.split('.')[0]}.{name}")
    return out


def decode_sync_request(body: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(body or b"{}", parse_float=_Float)
    except ValueError as exc:
        raise GoDecodeError(f"invalid character in request body: {exc}") from exc
    if not isinstance(raw, dict):
        raise GoDecodeError(f"json: cannot unmarshal {_json_kind(raw)} into Go value of type ApplicationSyncRequest")
    decoded: dict[str, Any] = go_decode(raw, SYNC_REQUEST, "ApplicationSyncRequest")
    return decoded


# ---------------------------------------------------------------- projects and RBAC

PROJECT_SCOPED = {"applications", "applicationsets", "repositories", "exec", "logs", "clusters"}  # util/rbac
# validActions + validActionPatterns (v1alpha1/types.go, v3.1); the patterns are unanchored there too.
ACTIONS = {"get", "create", "update", "delete", "sync", "override", "*"}
ACTION_PATTERN = re.compile(r"action/.*|update/.*|delete/.*")


@dataclass(frozen=True)
class Policy:
    sub: str
    res: str
    act: str
    obj: str
    eft: str


@dataclass
class Project:
    name: str
    roles: dict[str, list[Policy]]
    windows: list[Mapping[str, Any]]

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Project:
        """An AppProject manifest; its role policies must pass `validatePolicy` (v1alpha1/types.go)."""
        name = str(doc["metadata"]["name"])
        spec = doc.get("spec") or {}
        roles: dict[str, list[Policy]] = {}
        for role in spec.get("roles") or []:
            rname = str(role["name"])
            if not re.fullmatch(r"[a-zA-Z0-9]([-_a-zA-Z0-9]*[a-zA-Z0-9])?", rname):
                raise ValueError(f"AppProject {name}: invalid role name '{rname}'")
            roles[rname] = [_validate_policy(name, rname, str(p)) for p in role.get("policies") or []]
        return cls(name, roles, list(spec.get("syncWindows") or []))

    def allows(self, subject: str, res: str, act: str, obj: str) -> bool:
        """assets/model.conf: some allow matches and no deny matches (glob on res, act, obj)."""
        matched = [
            p.eft
            for role in self.roles.values()
            for p in role
            if p.sub == subject
            and fnmatch.fnmatchcase(res, p.res)
            and fnmatch.fnmatchcase(act, p.act)
            and fnmatch.fnmatchcase(obj, p.obj)
        ]
        return "allow" in matched and "deny" not in matched


def _validate_policy(proj: str, role: str, line: str) -> Policy:
    parts = [p.strip() for p in line.split(",")]
    why = None
    if len(parts) != 6 or parts[0] != "p":
        why = "must be of the form: 'p, sub, res, act, obj, eft'"
    elif parts[1] != f"proj:{proj}:{role}":
        why = f"policy subject must be: 'proj:{proj}:{role}', not '{parts[1]}'"
    elif parts[2] not in PROJECT_SCOPED:
        why = f"project resource must be one of {sorted(PROJECT_SCOPED)}, not '{parts[2]}'"
    elif parts[3] not in ACTIONS and not ACTION_PATTERN.search(parts[3]):
        why = f"invalid action '{parts[3]}'"
    elif not re.fullmatch(rf"{re.escape(proj)}(/[*\w.-]+)?/[*\w.-]+", parts[4]):
        why = f"object must be of form '{proj}/*' or '{proj}[/<NAMESPACE>]/<APPNAME>', not '{parts[4]}'"
    elif parts[5] not in ("allow", "deny"):
        why = "effect must be: 'allow' or 'deny'"
    if why:
        raise ValueError(f"AppProject {proj}: invalid policy rule '{line}': {why}")
    return Policy(*parts[1:])


# ---------------------------------------------------------------- applications and the server


@dataclass
class App:
    name: str
    project: str
    sources: list[dict[str, Any]]
    automated: bool = True
    namespace: str = "argocd"
    destination: dict[str, str] = field(
        default_factory=lambda: {"server": "https://kubernetes.default.svc", "namespace": ""}
    )
    operation: dict[str, Any] | None = None
    sync: dict[str, Any] = field(default_factory=lambda: {"status": "OutOfSync", "revision": "", "revisions": []})
    operation_state: dict[str, Any] | None = None
    # Live objects of the app in the cluster (tests set them): served by GET .../resource-tree.
    live: list[dict[str, Any]] = field(default_factory=list)

    def resource_tree(self) -> dict[str, Any]:
        """`ApplicationTree` (pkg/apis/application/v1alpha1/types.go): one `ResourceNode` per live object, empty
        fields left out (`omitempty`: a core object has no `group`); a Rollout's health from Argo CD's built-in
        health.lua (pipeline/gitops/argocd_rollout.py mirrors it)."""
        nodes = []
        for obj in self.live:
            group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
            meta = obj.get("metadata") or {}
            node: dict[str, Any] = {"group": group, "version": version, "kind": obj.get("kind", "")}
            node |= {"namespace": meta.get("namespace", ""), "name": meta.get("name", "")}
            if group == "argoproj.io" and obj.get("kind") == "Rollout":
                node["health"] = argocd_health(obj)
            nodes.append({k: v for k, v in node.items() if v})
        return {"nodes": nodes} if nodes else {}

    def manifest(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"project": self.project, "destination": dict(self.destination)}
        if len(self.sources) == 1:
            spec["source"] = dict(self.sources[0])
        else:
            spec["sources"] = [dict(s) for s in self.sources]
        if self.automated:
            spec["syncPolicy"] = {"automated": {"prune": True, "selfHeal": True}}
        out: dict[str, Any] = {
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
            "status": {"sync": dict(self.sync)},
        }
        if self.operation is not None:
            out["operation"] = self.operation
        if self.operation_state is not None:
            out["status"]["operationState"] = self.operation_state
        return out


# app name → what the ApplicationSet controller writes into it: {"project", "namespace", "sources"};
# raises AppSetGenerationError when any generator or template fails (then nothing is written).
Generate = Callable[[], Mapping[str, Mapping[str, Any]]]


class AppSetGenerationError(RuntimeError):
    """The ApplicationSet generated nothing: the message is its ErrorOccurred condition."""


@dataclass
class ArgoCDStandIn:
    projects: dict[str, Project]
    now: Callable[[], dt.datetime]
    # Resolves a source's targetRevision to a commit (a branch → its head now); chart versions stay as is.
    resolve: Callable[[Mapping[str, Any], str], str] = lambda source, rev: rev
    # Runs a sync operation (the app controller applying the manifests); raises when it fails.
    on_sync: Callable[[App, list[str]], None] = lambda app, revisions: None
    # What the ApplicationSet controller writes into each generated Application's sources.
    generate: Generate | None = None
    root_app: str = "llm-platform-root"
    appset_lag: float = 0.2
    requeue: float | None = None
    # argocd-cm application.sync.requireOverridePrivilegeForRevisionSync: false unless set (util/settings/settings.go)
    require_override_privilege: bool = False
    apps: dict[str, App] = field(default_factory=dict)
    # The ApplicationSet's ErrorOccurred condition message of its last reconcile ("" = generated).
    appset_error: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _timers: list[threading.Timer] = field(default_factory=list)

    # -- setup

    def add_app(self, app: App) -> App:
        self.apps[app.name] = app
        return app

    def issue_token(self, project: str, role: str) -> str:
        """`argocd proj role create-token <project> <role>` (server/project/project.go CreateToken)."""
        if role not in self.projects[project].roles:
            raise KeyError(f"project {project} has no role {role}")
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (project, role)
        return token

    def regenerate(self) -> None:
        """The ApplicationSet controller's reconcile: each generated Application's sources from git;
        a generation error leaves every Application as it is (applicationset_controller.go `Reconcile`)."""
        if self.generate is None:
            return
        try:
            generated = self.generate()
        except AppSetGenerationError as exc:
            self.appset_error = str(exc)
            return
        self.appset_error = ""
        for name, spec in generated.items():
            sources = [dict(s) for s in spec["sources"]]
            with self._lock:
                app = self.apps.get(name)
                if app is None:
                    # createOrUpdate: a newly generated Application (e.g. prod after its first promotion).
                    app = self.add_app(App(name, str(spec["project"]), []))
                    app.destination["namespace"] = str(spec["namespace"])
                if app.sources == sources:
                    continue
                app.sources = sources
                # The refresh compares against the new targets (controller/state.go fills status.sync.revisions
                # with them on every refresh): OutOfSync until an operation syncs them.
                app.sync = {
                    "status": "OutOfSync",
                    "revision": "",
                    "revisions": [self.resolve(s, str(s.get("targetRevision") or "HEAD")) for s in app.sources],
                }

    def observe_git(self) -> None:
        """Argo CD's automated syncs caught up with git (a promotion rolled out): the root app applied the
        branch head, the ApplicationSet regenerated, every Application synced to its spec."""
        if self.generate is None:
            return
        with self._lock:
            root = self.apps[self.root_app]
            root.sync = {
                **root.sync,
                "status": "Synced",
                "revision": self.resolve(root.sources[0], str(root.sources[0]["targetRevision"])),
            }
        self.regenerate()
        with self._lock:
            for app in self.apps.values():
                if app.name != self.root_app:
                    revisions = [self.resolve(s, str(s.get("targetRevision") or "HEAD")) for s in app.sources]
                    app.sync = {"status": "Synced", "revision": "", "revisions": revisions}

    # -- the API

    def handle(self, method: str, path: str, auth: str, body: bytes) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(
                {"at": time.monotonic(), "method": method, "path": path, "auth": auth, "body": body.decode() or None}
            )
            try:
                status, reply = 200, self._handle(method, path, auth, body)
            except _Status as st:
                status, reply = HTTP_STATUS[st.code], {"error": st.message, "code": st.code, "message": st.message}
            self.requests[-1]["status"] = status
            return status, reply

    def _subject(self, auth: str) -> tuple[str, str]:
        # server/server.go getToken: exactly the "Bearer " prefix.
        found = self._tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if found is None or found[1] not in self.projects[found[0]].roles:
            raise _Status(UNAUTHENTICATED, "invalid session: token is not valid")
        return found

    def _enforce(self, who: tuple[str, str], action: str, app: App, project_name: str = "") -> bool:
        project = self.projects.get(project_name or app.project)
        # enforceProjectToken: a project token is judged only within its own project.
        if project is None or who[0] != project.name:
            return False
        return project.allows(f"proj:{who[0]}:{who[1]}", "applications", action, f"{project.name}/{app.name}")

    def _get_app(self, who: tuple[str, str], action: str, name: str, project: str = "", namespace: str = "") -> App:
        """getApplicationEnforceRBACInformer → getAppEnforceRBAC, for a request naming `project`/`appNamespace`
        or not: without a project, 403 for "unknown" and "not allowed" alike; with one, 404 past the first check."""
        denied, missing = (
            _Status(PERMISSION_DENIED, "permission denied"),
            f'applications.argoproj.io "{name}" not found',
        )
        if project and not self._enforce(who, action, App(name, project, []), project):
            raise denied
        if (namespace or SERVER_NAMESPACE) != SERVER_NAMESPACE:
            raise denied  # isNamespaceEnabled: NamespaceNotPermittedError is not a NotFound
        app = self.apps.get(name)
        if app is None or app.namespace != SERVER_NAMESPACE or not self._enforce(who, action, app):
            raise _Status(NOT_FOUND, missing) if project else denied
        if project and app.project != project:
            raise _Status(NOT_FOUND, missing)
        return app

    def _handle(self, method: str, path: str, auth: str, body: bytes) -> dict[str, Any]:
        who = self._subject(auth)
        m = re.fullmatch(r"/api/v1/applications/([^/?]+)(/sync|/resource-tree)?(\?.*)?", path)
        allowed = (("GET", None), ("POST", "/sync"), ("GET", "/resource-tree"))
        if m is None or (method, m.group(2)) not in allowed:
            raise _Status(NOT_FOUND, "Not Found")
        if method == "GET":
            query = urllib.parse.parse_qs((m.group(3) or "").removeprefix("?"))
            project, namespace = (query.get(k, [""])[-1] for k in ("project", "appNamespace"))
            app = self._get_app(who, "get", m.group(1), project, namespace)
            return app.resource_tree() if m.group(2) else app.manifest()
        app = self._get_app(who, "get", m.group(1))
        try:
            req = decode_sync_request(body)
        except GoDecodeError as exc:
            raise _Status(INVALID_ARGUMENT, str(exc)) from exc
        # proj.Spec.SyncWindows.Matches(a).CanSync(true, nil): pipeline/gitops/sync_windows.py ports both;
        # an unparsable window is "invalid sync window" (also 403).
        who_app = AppIdentity(app.name, app.destination["namespace"], app.destination["server"], project=app.project)
        windows = [w for w in self.projects[app.project].windows if window_matches(w, who_app)]
        hold = can_sync(windows, self.now(), manual=True)
        if hold is not None:
            why = hold.replace("invalid sync window", "invalid sync window:", 1) if hold.startswith("invalid") else ""
            raise _Status(PERMISSION_DENIED, f"cannot sync: {why or 'blocked by sync window'}")
        if not self._enforce(who, "sync", app):
            raise _Status(PERMISSION_DENIED, self._denied(who, "sync", app))
        if req.get("manifests") is not None:
            if not self._enforce(who, "override", app):
                raise _Status(PERMISSION_DENIED, self._denied(who, "override", app))
            if app.automated and not req.get("dryRun"):
                raise _Status(
                    FAILED_PRECONDITION,
                    "cannot use local sync when Automatic Sync Policy is enabled unless for dry run",
                )
        revisions = self._resolve_source_revisions(who, app, req)
        if app.operation is not None:
            raise _Status(FAILED_PRECONDITION, "another operation is already in progress")
        app.operation = {
            "sync": {"revisions": revisions, "prune": bool(req.get("prune")), "dryRun": bool(req.get("dryRun"))},
            "initiatedBy": {"username": f"proj:{who[0]}:{who[1]}"},
        }
        threading.Thread(target=self._run_operation, args=(app, revisions), daemon=True).start()
        return app.manifest()

    def _denied(self, who: tuple[str, str], action: str, app: App) -> str:
        return f"permission denied: applications, {action}, {app.project}/{app.name}, sub: proj:{who[0]}:{who[1]}"

    def _resolve_source_revisions(self, who: tuple[str, str], app: App, req: Mapping[str, Any]) -> list[str]:
        positions, wanted = req.get("sourcePositions") or [], req.get("revisions") or []
        desired = [""] * len(app.sources)
        if len(app.sources) == 1:
            desired[0] = str(req.get("revision") or "")
        for i, pos in enumerate(positions):
            if pos <= 0 or pos > len(app.sources):
                raise _Status(UNKNOWN, "source position is out of range")
            if i >= len(wanted):  # Go: index out of range, recovered by the gRPC panic handler
                raise _Status(UNKNOWN, "runtime error: index out of range")
            desired[pos - 1] = wanted[i]
        out = []
        for src, want in zip(app.sources, desired, strict=True):
            target = str(src.get("targetRevision") or "HEAD")
            if want and want != target:
                if self.require_override_privilege and not self._enforce(who, "override", app):
                    raise _Status(PERMISSION_DENIED, self._denied(who, "override", app))
                if app.automated and not req.get("dryRun"):
                    what = f"source {src.get('repoURL')} to {want}" if len(app.sources) > 1 else f"to {want}"
                    raise _Status(FAILED_PRECONDITION, f"Cannot sync {what}: auto-sync currently set to {target}")
            try:
                out.append(self.resolve(src, want or target))
            except GitOpsError as exc:
                raise _Status(FAILED_PRECONDITION, f"error resolving repo revision: {exc}") from exc
        return out

    def _run_operation(self, app: App, revisions: list[str]) -> None:
        try:
            self.on_sync(app, revisions)
            phase, message = "Succeeded", "successfully synced"
        except Exception as exc:  # the controller records a failed operation; it never crashes
            phase, message = "Failed", str(exc)
        with self._lock:
            app.operation = None
            app.operation_state = {"phase": phase, "message": message, "syncResult": {"revisions": revisions}}
            if phase == "Succeeded":
                multi = len(app.sources) > 1
                app.sync = {
                    "status": "Synced",
                    "revision": "" if multi else revisions[0],
                    "revisions": revisions if multi else [],
                }
        if app.name == self.root_app and phase == "Succeeded":
            self._later(self.appset_lag, self.regenerate)

    def _later(self, seconds: float, fn: Callable[[], None]) -> None:
        timer = threading.Timer(seconds, fn)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _requeue_loop(self, stop: threading.Event) -> None:
        while self.requeue and not stop.wait(self.requeue):
            self.regenerate()

    @contextlib.contextmanager
    def serve(self, tls: ssl.SSLContext | None = None) -> Iterator[ArgoCDStandIn]:
        """Serve on 127.0.0.1 (https with `tls`: argocd-server serves TLS by default, self-signed)."""
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, data = stand_in.handle(
                    method, self.path, self.headers.get("Authorization", ""), self.rfile.read(length)
                )
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_POST(self) -> None:
                self._reply("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
        stop = threading.Event()
        threads = [
            threading.Thread(target=server.serve_forever, name="argocd-stand-in", daemon=True),
            threading.Thread(target=self._requeue_loop, args=(stop,), name="appset-requeue", daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            stop.set()
            for timer in self._timers:
                timer.cancel()
            server.shutdown()
            server.server_close()

    def syncs(self, app: str) -> list[dict[str, Any]]:
        return [
            json.loads(r["body"] or "{}")
            for r in self.requests
            if r["method"] == "POST" and r["path"] == f"/api/v1/applications/{app}/sync"
        ]

    def wait_idle(self, app: str, timeout: float = 5.0) -> None:
        """Until `app` has no running operation (bounded)."""
        deadline = time.monotonic() + timeout
        while self.apps[app].operation is not None and time.monotonic() < deadline:
            time.sleep(0.01)


class _Status(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# ---------------------------------------------------------------- this repo's ApplicationSet, generated from git


@dataclass
class GitOpsAppSet:
    """What the ApplicationSet controller writes for environments/argocd/applicationset-llm-service.yaml,
    the one the root app last synced (`applied()`), not the branch's (Argo CD v3.1+).

    - Generators (applicationset/generators/git.go `GenerateParams`): only git files generators with
      repoURL/revision/files/values/requeueAfterSeconds are modelled; anything else (selector,
      pathParamPrefix, a per-generator template, another generator kind, goTemplate off) is refused
      rather than silently mis-generated. Before reading git, `GenerateParams` fetches the template's
      AppProject: one the cluster lacks fails the generator ("error getting project").
    - Revision (reposerver/repository/repository.go `GetGitFiles` → util/git/client.go `lsRemote`):
      a full sha as given (checking out one the repository lacks fails "unable to checkout git repo"),
      else a branch/tag by short or full ref name, HEAD, or a truncated sha; nothing else (no `main~1`).
    - Files (`GetGitFiles` → `LsFiles`): Argo CD's DEFAULT globbing, `git ls-files -- <pattern>` at that
      commit, where `*` DOES cross `/` (docs/operator-manual/applicationset/Generators-Git-File-Globbing.md;
      the doublestar mode needs `applicationsetcontroller.enable.new.git.file.globbing`, which this
      repository's install does not set). Includes minus excludes, sorted (`generateParamsForGitFiles`).
    - Parameters (`generateParamsFromGitFile`): a file holding a mapping is one parameter set, a list of
      mappings one per item, anything else "unable to parse file"; plus `path` and the rendered `values`.
    - Rendering (applicationset/utils/utils.go `RenderTemplateParams`): the WHOLE template (metadata
      labels/annotations included, map keys too) through the goTemplate subset of pipeline/checks/validate.py
      with missingkey=error.
    - The first failing generator or template fails the whole generation
      (applicationset/controllers/template/template.go `GenerateApplications`): AppSetGenerationError, no
      Application at all. A name generated twice fails it too: stricter than `validateGeneratedApplications`
      (applicationset_controller.go), which only drops the duplicate and still writes the others."""

    remote: str  # the GitOps repository (a bare repo path or URL git can read)
    envs: Sequence[str]
    applied: Callable[[], str]  # the commit the root app last synced
    branch: str = "main"
    # AppProjects that exist in the cluster (None: not checked, for callers that model no projects).
    projects: Callable[[], Collection[str]] | None = None
    chart_repo: str = field(default_factory=lambda: repo_platform().chart_repo)
    git_repo: str = field(default_factory=lambda: repo_platform().git.url)

    _GIT_KEYS = frozenset({"repoURL", "revision", "files", "values", "requeueAfterSeconds"})

    def _show(self, rev: str, path: str) -> str | None:
        try:
            return git("--git-dir", self.remote, "show", f"{rev}:{path}")
        except GitOpsError:
            return None

    def head(self) -> str:
        return git("--git-dir", self.remote, "rev-parse", self.branch).strip()

    def resolve(self, source: Mapping[str, Any], rev: str) -> str:
        """`resolveRevision`: a git branch → its commit now; a commit or a chart version as given."""
        if source.get("chart") or re.fullmatch(r"[0-9a-f]{40}", rev):
            return rev
        return git("--git-dir", self.remote, "rev-parse", rev).strip()

    def _commit(self, repo_url: str, revision: str) -> str:
        """The generator's revision as a commit (util/git/client.go `lsRemote`, then the checkout)."""
        rev = revision or "HEAD"
        refs: dict[str, str] = {}  # ref name → commit (what ls-remote lists)
        for line in git("--git-dir", self.remote, "show-ref", "--head", check=False).splitlines():
            sha, _, name = line.partition(" ")
            refs[name] = sha
        if re.fullmatch(r"[0-9a-fA-F]{40}", rev):
            wanted = rev
        elif rev in refs:
            wanted = refs[rev]
        elif f"refs/heads/{rev}" in refs or f"refs/tags/{rev}" in refs:
            wanted = refs.get(f"refs/heads/{rev}") or refs[f"refs/tags/{rev}"]
        elif re.fullmatch(r"[0-9a-fA-F]{7,}", rev):
            wanted = rev
        else:
            raise AppSetGenerationError(
                f"error generating params from git: rpc error: code = Internal desc = unable to resolve git revision "
                f"{rev}: unable to resolve '{rev}' to a commit SHA"
            )
        sha = git(
            "--git-dir", self.remote, "rev-parse", "--verify", "--quiet", f"{wanted}^{{commit}}", check=False
        ).strip()
        if not sha:
            raise AppSetGenerationError(
                f"error generating params from git: unable to checkout git repo {repo_url} with revision "
                f"{rev}: reference is not a tree"
            )
        return sha

    def _ls_files(self, commit: str, pattern: str) -> set[str]:
        """`git ls-files -- <pattern>` in a checkout of `commit` (a throwaway index; no work tree needed)."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            git("--git-dir", self.remote, "read-tree", commit, env=env)
            out = git(
                "--git-dir",
                self.remote,
                "--work-tree",
                tmp,
                "ls-files",
                "--full-name",
                "-z",
                "--",
                pattern,
                cwd=Path(tmp),
                env=env,
            )
        return {f for f in out.split("\0") if f}

    def _params(self, gen: Mapping[str, Any], project: str) -> list[dict[str, Any]]:
        """One parameter set per file (per list item) the git files generator selects at its revision."""
        spec = gen.get("git")
        if set(gen) != {"git"} or not isinstance(spec, Mapping) or not spec.get("files") or set(spec) - self._GIT_KEYS:
            raise AppSetGenerationError(
                f"generator {dict(gen)} is not a plain git files generator (all this stand-in models)"
            )
        if self.projects is not None and project not in self.projects():
            raise AppSetGenerationError(
                f'error getting project {project}: appprojects.argoproj.io "{project}" not found'
            )
        repo_url = str(spec.get("repoURL"))
        commit = self._commit(repo_url, str(spec.get("revision") or "HEAD"))
        files: set[str] = set()
        for item in spec["files"]:
            if not item.get("exclude"):
                files |= self._ls_files(commit, str(item["path"]))
        for item in spec["files"]:
            if item.get("exclude"):
                files -= self._ls_files(commit, str(item["path"]))
        out = []
        for rel in sorted(files):
            where = f"error generating params from git: unable to process file '{rel}' from repository '{repo_url}'"
            try:
                content = load_yaml_text(git("--git-dir", self.remote, "show", f"{commit}:{rel}"), rel)
            except GitOpsError as exc:
                raise AppSetGenerationError(f"{where}: unable to parse file: {exc}") from exc
            content = json.loads(json.dumps({} if content is None else content, default=str))
            objects = content if isinstance(content, list) else [content]
            if not all(isinstance(o, dict) for o in objects):
                raise AppSetGenerationError(f"{where}: unable to parse file: not a mapping or a list of mappings")
            for obj in objects:
                params = {**obj, "path": validate._path_params(rel, rel.rsplit("/", 1)[-1])}
                try:
                    values = {
                        k: validate.render_go_template(str(v), params) for k, v in (spec.get("values") or {}).items()
                    }
                except (KeyError, ValueError) as exc:
                    raise AppSetGenerationError(f"{where}: failed to append templated values: {exc}") from exc
                params["values"] = values
                out.append(params)
        return out

    def __call__(self) -> dict[str, dict[str, Any]]:
        appset_text = self._show(self.applied() or self.head(), PIN_FILE)
        if not appset_text:
            return {}
        appset = json.loads(json.dumps(load_yaml_text(appset_text, PIN_FILE), default=str))
        aspec = appset["spec"]
        if aspec.get("goTemplate") is not True or "missingkey=error" not in (aspec.get("goTemplateOptions") or []):
            # fasttemplate (goTemplate off) or missingkey=default render differently: not modelled.
            raise AppSetGenerationError(f"{PIN_FILE}: only goTemplate with missingkey=error is modelled")
        template = aspec["template"]
        project = str((template.get("spec") or {}).get("project") or "")
        out: dict[str, dict[str, Any]] = {}
        first: AppSetGenerationError | None = None
        for gen in aspec.get("generators") or []:
            try:
                param_sets = self._params(gen, project)
            except (AppSetGenerationError, GitOpsError) as exc:
                first = first or AppSetGenerationError(str(exc))
                continue
            for params in param_sets:
                try:
                    app = validate._render_tree(template, params)
                    name, spec = app["metadata"]["name"], app["spec"]
                except (KeyError, ValueError) as exc:
                    first = first or AppSetGenerationError(f"error generating application from params: {exc}")
                    continue
                if name in out:
                    first = first or AppSetGenerationError(
                        f"ApplicationSet llm-service contains applications with duplicate name: {name}"
                    )
                out[name] = {
                    "project": spec["project"],
                    "namespace": spec["destination"]["namespace"],
                    "sources": spec["sources"],
                }
        if first is not None:
            raise first
        return out


def stand_in_for(
    remote: str,
    project_docs: Sequence[Mapping[str, Any]],
    now: Callable[[], dt.datetime],
    envs: Sequence[str],
    on_sync: Callable[[App, list[str]], None] = lambda app, revisions: None,
    **kw: Any,
) -> ArgoCDStandIn:
    """A stand-in over a GitOps remote: the AppProjects given, the root app and one Application per env
    as the ApplicationSet generates them from git (synced to the head when it starts)."""
    projects = {p.name: p for p in (Project.from_doc(d) for d in project_docs)}
    stand_in = ArgoCDStandIn(projects=projects, now=now, on_sync=on_sync, **kw)
    appset = GitOpsAppSet(
        remote,
        envs,
        applied=lambda: str(stand_in.apps[stand_in.root_app].sync["revision"]),
        projects=lambda: stand_in.projects,
    )
    stand_in.generate, stand_in.resolve = appset, appset.resolve
    head = appset.head()
    root = stand_in.add_app(
        App(stand_in.root_app, "llm-platform", [{"repoURL": appset.git_repo, "targetRevision": appset.branch}])
    )
    root.destination["namespace"] = "argocd"
    root.sync = {"status": "Synced", "revision": head, "revisions": []}
    try:
        generated = appset()
    except AppSetGenerationError as exc:
        stand_in.appset_error, generated = str(exc), {}
    for name, spec in generated.items():
        app = stand_in.add_app(App(name, str(spec["project"]), [dict(s) for s in spec["sources"]]))
        app.destination["namespace"] = str(spec["namespace"])
        app.sync = {
            "status": "Synced",
            "revision": "",
            "revisions": [appset.resolve(s, s["targetRevision"]) for s in app.sources],
        }
    return stand_in


def project_docs_at(remote: str, rev: str = "main") -> list[dict[str, Any]]:
    """The AppProject manifests of environments/argocd/ at `rev` of a GitOps remote."""
    names = git("--git-dir", remote, "ls-tree", "--name-only", rev, "environments/argocd/").split()
    docs = []
    for name in names:
        if re.fullmatch(r"environments/argocd/appproject-[\w.-]+\.yaml", name):
            doc = load_yaml_text(git("--git-dir", remote, "show", f"{rev}:{name}"), name)
            if isinstance(doc, dict) and doc.get("kind") == "AppProject":
                docs.append(doc)
    return docs
