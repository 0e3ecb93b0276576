"""A real HTTP server on 127.0.0.1 implementing the documented contract of Argo CD's REST API.

Only what the rollback controller and `status` use, as argocd-server's gRPC gateway serves it:

- `POST /api/v1/applications/{name}/sync` with an `ApplicationSyncRequest` JSON body (unknown fields
  → 400 InvalidArgument; `revisions` and `sourcePositions` of equal length, positions within the
  Application's sources; overriding a revision needs the `override` action) → 200 and the Application
  with its new `operation`;
- `GET /api/v1/applications/{name}` → the Application (`status.sync.status`, `status.sync.revision`);
- `Authorization: Bearer <token>` (a project-role JWT) → else 401 Unauthenticated (code 16);
- RBAC: the token's actions (`get`, `sync`, `override`) on `<project>/<app>` → else 403 (code 7);
- sync windows of the AppProject: an active deny window blocks a sync unless `manualSync: true`
  (an API sync is a manual sync) → 403 "cannot sync: blocked by sync window" (code 7);
- an operation already running → 400 FailedPrecondition (code 9);
- unknown application → 404 NotFound (code 5).
Errors are `{"error", "code", "message"}` as the gateway writes gRPC statuses.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.gitops.sync_windows import window_start

SYNC_REQUEST_FIELDS = {
    "name", "revision", "revisions", "sourcePositions", "dryRun", "prune", "strategy", "resources",
    "manifests", "infos", "retryStrategy", "syncOptions", "appNamespace", "project",
}  # fmt: skip


@dataclass
class FakeArgoCD:
    token: str
    windows: list[Mapping[str, Any]]
    now: Callable[[], dt.datetime]
    project: str = "llm-service"
    actions: set[str] = field(default_factory=lambda: {"get", "sync", "override"})
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    busy: set[str] = field(default_factory=set)
    url: str = ""

    def add_app(self, name: str, sources: int = 2, project: str | None = None) -> None:
        self.apps[name] = {
            "metadata": {"name": name, "namespace": "argocd"},
            "spec": {"project": project or self.project, "sources": [{} for _ in range(sources)]},
            "status": {"sync": {"status": "Synced", "revision": "", "revisions": []}},
        }

    def blocked(self, app: str) -> str | None:
        """A manual sync of `app` now: the deny window that blocks it, or None."""
        now = self.now()
        for w in self.windows:
            names = w.get("applications") or []
            if w.get("kind") != "deny" or not any(fnmatch.fnmatch(app, g) for g in names):
                continue
            if window_start(w, now) is not None and not w.get("manualSync", False):
                return str(w.get("schedule"))
        return None

    def handle(self, method: str, path: str, auth: str, body: bytes) -> tuple[int, dict[str, Any]]:
        def err(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
            return status, {"error": message, "code": code, "message": message}

        self.requests.append({"method": method, "path": path, "auth": auth, "body": body.decode() or None})
        if auth != f"Bearer {self.token}":
            return err(401, 16, "no session information")
        parts = path.strip("/").split("/")
        if parts[:3] != ["api", "v1", "applications"] or len(parts) not in (4, 5):
            return err(404, 5, "Not Found")
        name = parts[3]
        app = self.apps.get(name)
        if app is None:
            return err(404, 5, f'applications.argoproj.io "{name}" not found')
        scope = f"{app['spec']['project']}/{name}"
        if method == "GET" and len(parts) == 4:
            if "get" not in self.actions:
                return err(403, 7, f"permission denied: applications, get, {scope}")
            return 200, app
        if method != "POST" or parts[4:] != ["sync"]:
            return err(404, 5, "Not Found")
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return err(400, 3, "invalid request body")
        if not isinstance(req, dict) or set(req) - SYNC_REQUEST_FIELDS:
            return err(400, 3, f"unknown field(s) {sorted(set(req) - SYNC_REQUEST_FIELDS)}")
        revisions, positions = req.get("revisions") or [], req.get("sourcePositions") or []
        if len(revisions) != len(positions):
            return err(400, 3, "revisions and sourcePositions must have the same length")
        if any(not 1 <= int(p) <= len(app["spec"]["sources"]) for p in positions):
            return err(400, 3, "source position is out of range")
        if "sync" not in self.actions or ((revisions or req.get("revision")) and "override" not in self.actions):
            return err(
                403,
                7,
                f"permission denied: applications, {'sync' if 'sync' not in self.actions else 'override'}, {scope}",
            )
        if self.blocked(name):
            return err(403, 7, "cannot sync: blocked by sync window")
        if name in self.busy:
            return err(400, 9, "another operation is already in progress")
        app["operation"] = {
            "sync": {k: req[k] for k in ("revisions", "sourcePositions", "prune", "dryRun") if k in req},
            "initiatedBy": {"username": "proj:llm-service:rollback-controller"},
        }
        # Argo CD runs the operation asynchronously; here it "completes" at once.
        app["status"]["sync"] = {
            "status": "Synced",
            "revision": revisions[-1] if revisions else "",
            "revisions": revisions,
        }
        return 200, app

    def syncs(self, app: str) -> list[dict[str, Any]]:
        return [
            json.loads(r["body"])
            for r in self.requests
            if r["method"] == "POST" and r["path"] == f"/api/v1/applications/{app}/sync"
        ]


@contextmanager
def serve(fake: FakeArgoCD) -> Iterator[FakeArgoCD]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, data = fake.handle(
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
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
