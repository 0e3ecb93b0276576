"""Ask Argo CD to sync an env now: its REST API, project-role bearer tokens, sync windows respected.

What argocd-server does with the requests (v3.x; each rule names the upstream file):

    POST /api/v1/applications/{name}/sync   body: ApplicationSyncRequest; 200 → the Application
    GET  /api/v1/applications/{name}        200 → the Application (spec.sources, status.sync)

- The body is decoded by Go's encoding/json (util/grpc/json.go `JSONMarshaler.NewDecoder`) into
  `ApplicationSyncRequest` (pkg/apiclient/application/application.pb.go): `sourcePositions` is
  `[]int64`, so positions are JSON numbers, never strings (a string is 400 InvalidArgument).
- `Server.Sync` (server/application/application.go) checks, in this order: `get` on the app
  (an unknown app without a project in the request is 403, not 404), the AppProject's sync windows
  (a requested sync is a manual one: `CanSync(true)`; 403 "cannot sync: blocked by sync window"),
  `sync` on the app, then `resolveSourceRevisions`: a requested revision that differs from a
  source's `targetRevision` while automated sync is on is 400 FailedPrecondition ("auto-sync currently
  set to ..."; for multi-source apps from v3.3 — v3.1/v3.2 wrote the override into the spec instead,
  argo-cd#22858). So the controller never overrides revisions: it waits (bounded) until the
  Application's spec shows the rollback (the chart version; for a pinned env the values commit), then
  syncs the spec. A branch source is resolved afresh at that moment (`resolveRevision` → repo-server
  `ResolveRevision`, an uncached `ls-remote`).
- A project-role token acts only within its project (server/rbacpolicy/rbacpolicy.go
  `enforceProjectToken`): the `llm-service` token may sync `llm-service-<env>`; the root app
  `llm-platform-root` (project `llm-platform`, which carries the prod pin) takes a token of a role of
  `llm-platform` — a second token (`ARGOCD_ROOT_TOKEN_FILE`).
- An operation already running is 400 FailedPrecondition "another operation is already in progress"
  (util/argo/argo.go `ErrAnotherOperationInProgress`): retried within the same bound.
Errors are gRPC statuses as JSON (`{"error", "code", "message"}`).

The prod deny windows carry `manualSync: true`, so the controller's rollback reaches the cluster at
any hour while automated syncs of promotions stay held.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipeline.gitops.argocd_pin import pinned_revision
from pipeline.gitops.repo import GitOpsError, GitOpsRepo, git
from pipeline.gitops.sync_windows import sync_hold

log = logging.getLogger(__name__)

# The Application the ApplicationSet generates for an env (environments/argocd/applicationset-llm-service.yaml).
APP_NAME = "llm-service-{env}"
# The app-of-apps that applies the ApplicationSet (and so the prod pin): synced first, no windows apply.
ROOT_APP = "llm-platform-root"
# Source positions (1-based) of the env Application: the OCI chart, then the git `$values` source.
CHART_SOURCE, VALUES_SOURCE = 1, 2
# Argo CD refreshes every app on `timeout.reconciliation` (120 s) + up to 60 s jitter by default
# (cmd/argocd-application-controller/commands/argocd_application_controller.go defaultAppResyncPeriod*).
POLL = "Argo CD's next poll (timeout.reconciliation: 120 s + up to 60 s jitter by default)"
# gRPC codes argocd-server answers with (google.golang.org/grpc/codes).
FAILED_PRECONDITION = 9


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class ArgoCDConfig:
    server: str  # https://argocd-server.argocd.svc
    token_file: Path  # project role of `llm-service` (syncs llm-service-<env>)
    app_name: str = APP_NAME
    root_app: str | None = ROOT_APP
    # Project role of `llm-platform` (syncs the root app); None: the root app's own auto-sync moves the pin.
    root_token_file: Path | None = None
    verify: bool | str = True  # False, True, or a CA bundle path
    timeout: float = 10.0
    # How long a rollback waits for the Application's spec to show it before syncing (ApplicationSet lag).
    spec_wait: float = 45.0
    poll: float = 2.0

    @classmethod
    def from_env(cls) -> ArgoCDConfig | None:
        """ARGOCD_SERVER + ARGOCD_AUTH_TOKEN_FILE (+ ARGOCD_ROOT_TOKEN_FILE, ARGOCD_CA_FILE or ARGOCD_INSECURE,
        ARGOCD_SPEC_WAIT seconds); None when not configured."""
        server, token = os.environ.get("ARGOCD_SERVER", ""), os.environ.get("ARGOCD_AUTH_TOKEN_FILE", "")
        if not server or not token:
            return None
        if not server.startswith(("http://", "https://")):
            server = f"https://{server}"
        verify: bool | str = os.environ.get("ARGOCD_CA_FILE") or True
        if _truthy(os.environ.get("ARGOCD_INSECURE")):
            verify = False
        root = os.environ.get("ARGOCD_ROOT_TOKEN_FILE")
        raw_wait = os.environ.get("ARGOCD_SPEC_WAIT") or str(cls.spec_wait)
        try:
            wait = float(raw_wait)
        except ValueError:
            raise ValueError(f"ARGOCD_SPEC_WAIT must be a number of seconds, not {raw_wait!r}") from None
        return cls(
            server=server.rstrip("/"),
            token_file=Path(token),
            root_token_file=Path(root) if root else None,
            verify=verify,
            spec_wait=wait,
        )

    def token(self, root: bool = False) -> str:
        # Read on every request: a rotated Secret is picked up without a restart.
        path = self.root_token_file if root else self.token_file
        if path is None:
            raise ValueError("no root app token configured")
        return path.read_text().strip()


@dataclass(frozen=True)
class SyncRequest:
    """The controller's account of getting a rollback onto the cluster."""

    state: str  # requested | held | failed | not_configured
    detail: str
    app: str = ""
    revision: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "detail": self.detail, "app": self.app, "revision": self.revision}

    @property
    def settled(self) -> bool:
        """Nothing more the controller can do now (a failed request is retried by the next notification)."""
        return self.state != "failed"


def not_synced(why: str) -> str:
    return f"reverted in git, not yet synced: {why}"


class ArgoCDClient:
    def __init__(self, cfg: ArgoCDConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.cfg = cfg
        self._transport = transport

    def _client(self, root: bool = False) -> httpx.Client:
        verify = self.cfg.verify
        return httpx.Client(
            base_url=self.cfg.server,
            headers={"Authorization": f"Bearer {self.cfg.token(root)}"},
            timeout=self.cfg.timeout,
            # A CA bundle path as an SSLContext (httpx deprecates verify=<path>).
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
            transport=self._transport,
        )

    def sync(self, app: str, *, root: bool = False) -> httpx.Response:
        """POST /api/v1/applications/{app}/sync of the Application's own spec (no revision overrides).

        Prune, as the Applications' automated policy does: a revert of a release that added an object
        must remove it, or the app stays OutOfSync until a deny window ends. Overrides are refused on an
        automated app (`resolveSourceRevisions`), so the caller first waits until the spec shows the rollback.
        """
        body: dict[str, Any] = {"name": app, "prune": True, "dryRun": False, "strategy": {"hook": {}}}
        with self._client(root) as c:
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


def _code(resp: httpx.Response) -> int | None:
    try:
        code = resp.json().get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _spec_gap(app: dict[str, Any], want: dict[int, str]) -> str | None:
    """What the Application's spec still says instead of `want` (source position → targetRevision), or None."""
    sources = (app.get("spec") or {}).get("sources") or []
    gaps = []
    for pos, rev in sorted(want.items()):
        have = str((sources[pos - 1] if len(sources) >= pos else {}).get("targetRevision") or "")
        if have != rev:
            gaps.append(f"source {pos} at {have[:12] or '?'} (rollback: {rev[:12]})")
    return "; ".join(gaps) or None


def request_sync(
    cfg: ArgoCDConfig | None,
    repo: GitOpsRepo,
    env: str,
    revision: str,
    chart_version: str,
    now: dt.datetime,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncRequest:
    """Ask Argo CD to sync `env` to the pushed rollback (`revision` in git, `chart_version`); say plainly
    when it can still wait.

    A pinned env (prod) first gets its root app synced (it applies the ApplicationSet with the moved
    pin). Then the env's Application is read until its spec shows the rollback (bounded by
    `cfg.spec_wait`), and only then synced, without overrides (accepted while auto-sync is on).
    `repo` is the work copy at the pushed rollback (its AppProject windows explain a refusal).
    """
    if cfg is None:
        hold = sync_hold(repo, env, now, manual=False)
        if hold:
            return SyncRequest("held", not_synced(f"{hold} (automated sync; no Argo CD API configured)"))
        return SyncRequest("not_configured", f"no Argo CD API configured: the rollback syncs on {POLL}")
    app = cfg.app_name.format(env=env)
    client = ArgoCDClient(cfg, transport)
    pin = pinned_revision(repo, env)
    want = {CHART_SOURCE: chart_version} if chart_version else {}
    if pin:
        want[VALUES_SOURCE] = pin
    notes: list[str] = []

    def failed(why: str) -> SyncRequest:
        hold = sync_hold(repo, env, now, manual=False)
        then = f"{hold}, then {POLL}" if hold else POLL
        return SyncRequest("failed", not_synced(f"{'; '.join([*notes, why])}; waits for {then}"), app, revision)

    deadline = time.monotonic() + cfg.spec_wait
    try:
        if pin and cfg.root_app:
            if cfg.root_token_file is None or not cfg.root_token_file.is_file():
                # A Secret without the key mounts no file: the env's sync is still worth asking for.
                notes.append(f"no token for {cfg.root_app} (ARGOCD_ROOT_TOKEN_FILE): its auto-sync moves the pin")
            else:
                root = client.sync(cfg.root_app, root=True)
                if root.status_code != 200:
                    notes.append(f"sync of {cfg.root_app} refused (HTTP {root.status_code}: {_error(root)})")
                    log.warning("sync of %s: HTTP %d %s", cfg.root_app, root.status_code, _error(root))
        while True:
            got = client.get(app)
            if got.status_code != 200:
                return failed(f"reading {app} failed (HTTP {got.status_code}: {_error(got)})")
            gap = _spec_gap(got.json(), want)
            if gap is None:
                resp = client.sync(app)
                busy = resp.status_code == 400 and _code(resp) == FAILED_PRECONDITION and "in progress" in _error(resp)
                if not busy or time.monotonic() >= deadline:
                    break
            elif time.monotonic() >= deadline:
                return failed(
                    f"{app}'s spec still has {gap} after {cfg.spec_wait:g} s: the ApplicationSet has not "
                    "regenerated it, and a sync that overrides an automated app's revisions is refused"
                )
            sleep(cfg.poll)
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return failed(f"sync request to {app} failed: {exc}")
    if resp.status_code == 200:
        done = f"sync of {app} to {revision[:12]} requested"
        return SyncRequest("requested", "; ".join([*notes, done]), app, revision)
    message = _error(resp)
    if resp.status_code == 403 and "sync window" in message.lower():
        hold = sync_hold(repo, env, now, manual=True) or "a sync window"
        return SyncRequest("held", not_synced(f"{hold} (Argo CD: {message})"), app, revision)
    return failed(f"Argo CD refused the sync of {app} (HTTP {resp.status_code}: {message})")


def synced_revisions(status: dict[str, Any]) -> list[str]:
    """The revisions an Application last synced: `status.sync.revisions` for a multi-source app
    (controller/state.go leaves `status.sync.revision` empty then), else `[status.sync.revision]`."""
    sync = status.get("sync") or {}
    revisions = [str(r) for r in sync.get("revisions") or []]
    return revisions or ([str(sync["revision"])] if sync.get("revision") else [])


def app_sync_state(cfg: ArgoCDConfig, env: str, transport: httpx.BaseTransport | None = None) -> dict[str, Any]:
    """GET the env's Application: sync status and the git revision of its values source (for `status`).

    `status.sync.revisions` are the revisions the last refresh compared against (controller/state.go),
    so they name what runs only while `status.sync.status` is "Synced"."""
    app = cfg.app_name.format(env=env)
    try:
        resp = ArgoCDClient(cfg, transport).get(app)
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return {"app": app, "error": str(exc)}
    if resp.status_code != 200:
        return {"app": app, "error": f"HTTP {resp.status_code}: {_error(resp)}"}
    st = resp.json().get("status") or {}
    revisions = synced_revisions(st)
    values = revisions[VALUES_SOURCE - 1] if len(revisions) >= VALUES_SOURCE else (revisions or [""])[-1]
    return {"app": app, "status": (st.get("sync") or {}).get("status", ""), "revision": values, "revisions": revisions}


def same_env_files(repo: GitOpsRepo, env: str, expected: str, live: str) -> bool:
    """`live` is `expected`, or a later commit of the branch with the same `environments/<env>/` files."""
    if not live or not expected:
        return False
    if live == expected:
        return True
    try:
        git("merge-base", "--is-ancestor", expected, live, cwd=repo.path)
        git("diff", "--quiet", expected, live, "--", f"environments/{env}", cwd=repo.path)
    except GitOpsError:
        return False
    return True


def rollout_state(
    cfg: ArgoCDConfig | None,
    repo: GitOpsRepo,
    env: str,
    expected: str,
    now: dt.datetime,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Has the cluster caught up with git for `env`? For `status`, after a rollback or a promotion.

    With the API configured: the revision the Application synced for its values source against
    `expected` (the pin, or the env's last commit on the branch). Without it: what the sync windows say
    about automated syncs right now.
    """
    hold = sync_hold(repo, env, now, manual=False)
    if cfg is not None:
        live = app_sync_state(cfg, env, transport)
        synced = live.get("status") == "Synced"
        if "error" not in live and synced and same_env_files(repo, env, expected, str(live.get("revision") or "")):
            return {"state": "synced", "detail": f"{live['app']} runs {expected[:12]}", **live}
        if "error" not in live:
            why = hold or f"{live['app']} is {live.get('status') or '?'} at {str(live.get('revision'))[:12] or '?'}"
            return {"state": "pending", "detail": not_synced(why), **live}
    if hold:
        return {"state": "held", "detail": not_synced(f"{hold} (automated sync)")}
    return {"state": "unknown", "detail": f"no sync window holds it; Argo CD syncs on {POLL}"}
