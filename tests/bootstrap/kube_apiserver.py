"""A small stand-in for kube-apiserver on 127.0.0.1: the read-only calls `bootstrap --check` makes.

No API server can run here. This serves GET only, for the objects it is given, and answers like the
real server (kubernetes v1.33 sources named per rule):
- routes as the API installer lays them out (staging/src/k8s.io/apiserver/pkg/endpoints/installer.go):
  `/api/v1/...` for the core group, `/apis/<group>/<version>/...` otherwise; cluster-wide lists
  `/<prefix>/<resource>`, namespaced reads `/<prefix>/namespaces/<ns>/<resource>/<name>`, cluster
  reads `/<prefix>/<resource>/<name>`; `/version` (apimachinery/pkg/version/types.go Info) and the
  discovery roots `/api`, `/apis` (APIVersions / APIGroupList);
- a custom resource is served only while its CRD exists AND serves that version (apiextensions-
  apiserver/pkg/apiserver/customresource_handler.go: otherwise the path is a plain 404);
- errors as `Status` objects (apiserver/pkg/endpoints/handlers/responsewriters/status.go) with the
  messages of apimachinery/pkg/api/errors/errors.go: 404 NotFound `<resource>[.<group>] "<name>" not
  found`, 401 Unauthorized without the bearer token (authentication before anything else: an
  apiserver with --anonymous-auth=false; with anonymous auth on, no token is system:anonymous and a
  403), 405 MethodNotAllowed for any verb but GET (this stand-in is read-only on purpose: the check must
  not write);
- authorization (RBAC) after authentication and BEFORE the route is looked up
  (apiserver/pkg/endpoints/filters/authorization.go): with `grants` set, a resource request the token
  holds no (verb, group, resource, namespace) grant for is 403 Forbidden, even for an object or a
  resource type that does not exist, with the message of responsewriters/errors.go `forbiddenMessage`
  wrapped by errors.go `NewForbidden`; `list` across all namespaces needs a cluster-wide grant.
  Discovery and /version are open to every authenticated user (system:discovery,
  system:public-info-viewer).
List items carry no apiVersion/kind (as the real list encoding); objects are served as given, so
the client's model validation (required fields) applies to them as to real ones.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# kind → (resource, namespaced): the RESTMapper entries of the kinds served here.
RESOURCES: dict[str, tuple[str, bool]] = {
    "Secret": ("secrets", True),
    "ConfigMap": ("configmaps", True),
    "PersistentVolumeClaim": ("persistentvolumeclaims", True),
    "Deployment": ("deployments", True),
    "DaemonSet": ("daemonsets", True),
    "StatefulSet": ("statefulsets", True),
    "StorageClass": ("storageclasses", False),
    "PriorityClass": ("priorityclasses", False),
    "CustomResourceDefinition": ("customresourcedefinitions", False),
}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class KubeAPIServer:
    objects: Sequence[Mapping[str, Any]]
    token: str
    git_version: str = "v1.33.2"
    # The token's RBAC grants: (verb, API group, resource, namespace or None for cluster-wide/all
    # namespaces). None: a cluster-admin token.
    grants: Collection[tuple[str, str, str, str | None]] | None = None
    user: str = "system:serviceaccount:platform:bootstrap-check"
    url: str = ""
    requests: list[tuple[str, str, int]] = field(default_factory=list)

    def _crd_resources(self) -> dict[tuple[str, str], tuple[str, str, bool]]:
        """(group/version, plural) → (kind, group, namespaced) of each CRD's SERVED versions."""
        out = {}
        for o in self.objects:
            if o.get("kind") != "CustomResourceDefinition":
                continue
            spec = o["spec"]
            for v in spec["versions"]:
                if v.get("served"):
                    gv = f"{spec['group']}/{v['name']}"
                    out[(gv, spec["names"]["plural"])] = (
                        spec["names"]["kind"],
                        spec["group"],
                        spec["scope"] == "Namespaced",
                    )
        return out

    def _route(self, path: str) -> tuple[int, dict[str, Any]]:
        parts = [p for p in path.split("?")[0].split("/") if p]
        if parts == ["version"]:
            # Every field of version.Info is required (no omitempty), and the client insists on each.
            return 200, {
                "major": "1",
                "minor": self.git_version.split(".")[1],
                "gitVersion": self.git_version,
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2026-06-17T00:00:00Z",
                "goVersion": "go1.24.4",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if parts == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if parts == ["apis"]:
            groups = sorted({str(o["apiVersion"]).split("/")[0] for o in self.objects if "/" in str(o["apiVersion"])})
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": g} for g in groups]}
        if parts[:2] == ["api", "v1"]:
            gv, rest = "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        ns = None
        if len(rest) >= 2 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if len(rest) not in (1, 2):
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        resource, name = rest[0], (rest[1] if len(rest) == 2 else None)
        denied = self._forbidden(gv, resource, ns, name)
        if denied is not None:
            return 403, denied
        builtin = {r: (k, ns_) for k, (r, ns_) in RESOURCES.items()}
        crds = self._crd_resources()
        if (gv, resource) in crds:
            kind, group, namespaced = crds[(gv, resource)]
        elif resource in builtin and self._builtin_gv(builtin[resource][0]) == gv:
            kind, namespaced = builtin[resource]
            group = gv.split("/")[0] if "/" in gv else ""
        else:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        if ns is not None and not namespaced:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        matches = [
            o
            for o in self.objects
            if o["kind"] == kind and o["apiVersion"] == gv and (ns is None or o["metadata"].get("namespace") == ns)
        ]
        if name is None:
            if namespaced is False and ns is not None:
                return 404, _status(404, "NotFound", "the server could not find the requested resource")
            items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in matches]
            return 200, {"kind": f"{kind}List", "apiVersion": gv, "metadata": {"resourceVersion": "1"}, "items": items}
        if namespaced and ns is None:
            # /<prefix>/<resource>/<name> of a namespaced resource is no route.
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        found = [o for o in matches if o["metadata"]["name"] == name]
        if not found:
            qualified = f"{resource}.{group}" if group else resource
            status = _status(404, "NotFound", f'{qualified} "{name}" not found')
            status["details"] = {"name": name, "group": group, "kind": resource}
            return 404, status
        return 200, dict(found[0])

    def _forbidden(self, gv: str, resource: str, ns: str | None, name: str | None) -> dict[str, Any] | None:
        """RBAC's answer for a GET (verb get with a name, else list), or None when a grant covers it."""
        if self.grants is None:
            return None
        group = gv.split("/")[0] if "/" in gv else ""
        verb = "get" if name else "list"
        if any((v, g, r) == (verb, group, resource) and (gns is None or gns == ns) for v, g, r, gns in self.grants):
            return None
        where = f"in the namespace {json.dumps(ns)}" if ns else "at the cluster scope"
        why = f"User {json.dumps(self.user)} cannot {verb} resource {json.dumps(resource)} in API group {json.dumps(group)} {where}"
        qualified = f"{resource}.{group}" if group else resource
        status = _status(
            403,
            "Forbidden",
            f"{qualified} {json.dumps(name)} is forbidden: {why}" if name else f"{qualified} is forbidden: {why}",
        )
        status["details"] = (
            {"name": name, "group": group, "kind": resource} if name else {"group": group, "kind": resource}
        )
        return status

    @staticmethod
    def _builtin_gv(kind: str) -> str:
        return {
            "Deployment": "apps/v1",
            "DaemonSet": "apps/v1",
            "StatefulSet": "apps/v1",
            "StorageClass": "storage.k8s.io/v1",
            "PriorityClass": "scheduling.k8s.io/v1",
            "CustomResourceDefinition": "apiextensions.k8s.io/v1",
        }.get(kind, "v1")

    def handle(self, method: str, path: str, auth: str) -> tuple[int, dict[str, Any]]:
        if auth != f"Bearer {self.token}":
            code, body = 401, _status(401, "Unauthorized", "Unauthorized")
        elif method != "GET":
            code, body = (
                405,
                _status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"),
            )
        else:
            code, body = self._route(path)
        self.requests.append((method, path, code))
        return code, body

    @contextlib.contextmanager
    def serve(self) -> Iterator[KubeAPIServer]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                code, body = stand_in.handle(self.command, self.path, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _reply

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def kubeconfig(url: str, token: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": url}}],
            "users": [{"name": "checker", "user": {"token": token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "checker"}}],
            "current-context": "standin",
        }
    )
