"""Ask Argo CD to sync an env now: its REST API, a project-role bearer token, sync windows respected.

Argo CD's documented API (the gRPC gateway of argocd-server):

    POST /api/v1/applications/{name}/sync   body: ApplicationSyncRequest (revision, prune, dryRun,
                                            strategy, syncOptions, ...); 200 → the Application
    GET  /api/v1/applications/{name}        200 → the Application (status.sync, operationState)

Both take `Authorization: Bearer <token>`: a JWT of the project role `rollback-controller` of the
`llm-service` AppProject (`argocd proj role create-token llm-service rollback-controller`), mounted
from the controller's Secret. Errors are gRPC statuses as JSON (`{"error", "code", "message"}`):
401 Unauthenticated, 403 PermissionDenied (RBAC, or "cannot sync: blocked by sync window" when a deny
window without `manualSync: true` is active), 404 NotFound, 400 FailedPrecondition (an operation is
already running).

A requested sync is a *manual* sync for Argo CD: the prod deny windows carry `manualSync: true`, so
the controller's rollback reaches the cluster at any hour while automated syncs stay held.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipeline.gitops.repo import GitOpsRepo
from pipeline.gitops.sync_windows import sync_hold

log = logging.getLogger(__name__)

# The Application the ApplicationSet generates for an env (environments/argocd/applicationset-llm-service.yaml).
APP_NAME = "llm-service-{env}"
# The app-of-apps that applies the ApplicationSet (and so the prod pin): synced first, no windows apply.
ROOT_APP = "llm-platform-root"
# Source positions (1-based) of the env Application: the OCI chart, then the git `$values` source.
CHART_SOURCE, VALUES_SOURCE = 1, 2
# Argo CD polls git every 3 minutes by default (timeout.reconciliation).
POLL = "Argo CD's next poll (timeout.reconciliation, 3 min by default)"


@dataclass(frozen=True)
class ArgoCDConfig:
    server: str  # https://argocd-server.argocd.svc
    token_file: Path
    app_name: str = APP_NAME
    root_app: str | None = ROOT_APP
    verify: bool | str = True  # False, True, or a CA bundle path
    timeout: float = 10.0

    @classmethod
    def from_env(cls) -> ArgoCDConfig | None:
        """ARGOCD_SERVER + ARGOCD_AUTH_TOKEN_FILE (+ ARGOCD_CA_FILE); None when not configured."""
        server, token = os.environ.get("ARGOCD_SERVER", ""), os.environ.get("ARGOCD_AUTH_TOKEN_FILE", "")
        if not server or not token:
            return None
        if not server.startswith(("http://", "https://")):
            server = f"https://{server}"
        return cls(server=server.rstrip("/"), token_file=Path(token), verify=os.environ.get("ARGOCD_CA_FILE") or True)

    def token(self) -> str:
        # Read on every request: a rotated Secret is picked up without a restart.
        return self.token_file.read_text().strip()


@dataclass(frozen=True)
class SyncRequest:
    """The controller's account of getting a rollback onto the cluster."""

    state: str  # requested | held | failed | not_configured
    detail: str
    app: str = ""
    revision: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "detail": self.detail, "app": self.app, "revision": self.revision}


def not_synced(why: str) -> str:
    return f"reverted in git, not yet synced: {why}"


class ArgoCDClient:
    def __init__(self, cfg: ArgoCDConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.cfg = cfg
        self._transport = transport

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.cfg.server,
            headers={"Authorization": f"Bearer {self.cfg.token()}"},
            timeout=self.cfg.timeout,
            verify=self.cfg.verify,
            transport=self._transport,
        )

    def sync(self, app: str, revisions: dict[int, str] | None = None) -> httpx.Response:
        """POST /api/v1/applications/{app}/sync (no prune: a rollback only changes what git changed).

        `revisions` maps source positions to revisions (multi-source Applications; needs the
        `applications, override` permission): the rollback's chart version and git commit exactly,
        not whatever the Application's spec still says before the ApplicationSet caught up.
        """
        body: dict[str, Any] = {"name": app, "prune": False, "dryRun": False, "strategy": {"hook": {}}}
        if revisions:
            body["revisions"] = [revisions[k] for k in sorted(revisions)]
            body["sourcePositions"] = [str(k) for k in sorted(revisions)]
        with self._client() as c:
            return c.post(f"/api/v1/applications/{app}/sync", json=body)

    def get(self, app: str) -> httpx.Response:
        with self._client() as c:
            return c.get(f"/api/v1/applications/{app}")


def _error(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(data.get("message") or data.get("error") or data)[:200]


def request_sync(
    cfg: ArgoCDConfig | None,
    repo: GitOpsRepo,
    env: str,
    revision: str,
    chart_version: str,
    now: dt.datetime,
    transport: httpx.BaseTransport | None = None,
) -> SyncRequest:
    """Ask Argo CD to sync `env` to `revision` (git) + `chart_version` now; say plainly when it can still wait.

    The root app-of-apps is synced first (it applies the ApplicationSet, i.e. the prod pin), so
    the Application's own spec agrees with the rollback and automated sync never flips it back.
    `repo` is the work copy at the pushed rollback (its AppProject windows explain a refusal).
    """
    if cfg is None:
        hold = sync_hold(repo, env, now, manual=False)
        if hold:
            return SyncRequest("held", not_synced(f"{hold} (automated sync; no Argo CD API configured)"))
        return SyncRequest("not_configured", f"no Argo CD API configured: the rollback syncs on {POLL}")
    app = cfg.app_name.format(env=env)
    client = ArgoCDClient(cfg, transport)
    try:
        if cfg.root_app:
            root = client.sync(cfg.root_app)
            if root.status_code != 200:
                log.warning("sync of %s: HTTP %d %s", cfg.root_app, root.status_code, _error(root))
        resp = client.sync(app, {CHART_SOURCE: chart_version, VALUES_SOURCE: revision})
    except (httpx.HTTPError, OSError) as exc:
        return SyncRequest(
            "failed", not_synced(f"sync request to {app} failed: {exc}; waits for {POLL}"), app, revision
        )
    if resp.status_code == 200:
        return SyncRequest("requested", f"sync of {app} to {revision[:12]} requested", app, revision)
    message = _error(resp)
    if resp.status_code == 403 and "sync window" in message.lower():
        hold = sync_hold(repo, env, now, manual=True) or "a sync window"
        return SyncRequest("held", not_synced(f"{hold} (Argo CD: {message})"), app, revision)
    hold = sync_hold(repo, env, now, manual=False)
    then = f"{hold}, then {POLL}" if hold else POLL
    return SyncRequest(
        "failed",
        not_synced(f"Argo CD refused the sync of {app} (HTTP {resp.status_code}: {message}); waits for {then}"),
        app,
        revision,
    )


def app_sync_state(cfg: ArgoCDConfig, env: str, transport: httpx.BaseTransport | None = None) -> dict[str, Any]:
    """GET the env's Application: sync status and the revision it runs (for `status`)."""
    app = cfg.app_name.format(env=env)
    try:
        resp = ArgoCDClient(cfg, transport).get(app)
    except (httpx.HTTPError, OSError) as exc:
        return {"app": app, "error": str(exc)}
    if resp.status_code != 200:
        return {"app": app, "error": f"HTTP {resp.status_code}: {_error(resp)}"}
    st = resp.json().get("status") or {}
    sync = st.get("sync") or {}
    return {"app": app, "status": sync.get("status", ""), "revision": sync.get("revision", "")}


def rollout_state(
    cfg: ArgoCDConfig | None, repo: GitOpsRepo, env: str, expected: str, now: dt.datetime
) -> dict[str, Any]:
    """Has the cluster caught up with git for `env`? For `status`, after a rollback or a promotion.

    With the API configured: the Application's synced revision against `expected` (the pin or the
    branch commit). Without it: what the sync windows say about automated syncs right now.
    """
    hold = sync_hold(repo, env, now, manual=False)
    if cfg is not None:
        live = app_sync_state(cfg, env)
        if live.get("revision") == expected:
            return {"state": "synced", "detail": f"{live['app']} runs {expected[:12]}", **live}
        if "error" not in live:
            why = hold or f"{live['app']} runs {str(live.get('revision'))[:12] or '?'}, sync pending"
            return {"state": "pending", "detail": not_synced(why), **live}
    if hold:
        return {"state": "held", "detail": not_synced(f"{hold} (automated sync)")}
    return {"state": "unknown", "detail": f"no sync window holds it; Argo CD syncs on {POLL}"}
