"""A tiny stand-in for Argo CD, used by the drill only: it applies what git says.

Argo CD watches the GitOps repository and syncs each env's Helm release to the pinned
values. There is no cluster here, so this agent polls the GitOps remote and, whenever the
pins of its env change, calls `apply(release, revision)` with the checkout at that commit — in the
drill that renders the env at the revision and replaces the pod (`podman kube play --replace`,
pipeline.controller.drill_pods), or, without an engine, maps the release's vLLM digest to a fault
profile of the simulator process (a "bad build") or clears all faults.
It is NOT a deployment tool: production uses the ApplicationSet in environments/argocd/.
What it mirrors of Argo CD: the application controller re-reads git every `timeout.reconciliation`
(120 s + ≤60 s jitter; cmd/argocd-application-controller/commands/argocd_application_controller.go) —
the production drill polls every 180 s, the worst case — and applies the env's manifests at one commit;
a failed apply is retried on the next round, as a failed sync is (controller/appcontroller.go). A sync
requested through the API reaches it through pipeline/gitops/argocd_standin.py (`on_sync`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pipeline.gitops import promotion as pm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncEvent:
    at: float  # time.monotonic()
    wall: float  # time.time()
    commit: str
    release: str | None


@dataclass(frozen=True)
class Revision:
    """What the agent sees when it applies: the commit and a checkout of the GitOps repo at it."""

    commit: str
    checkout: Path


Applier = Callable[[Release | None, Revision], None]


@dataclass
class SyncAgent:
    remote: str
    env: str
    work_dir: Path
    apply: Applier
    interval: float = 0.25
    events: list[SyncEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"sync-agent-{self.env}", daemon=True)
        self._repo = GitOpsRepo(self.remote, self.work_dir)
        self._applied: Release | None = None
        self._first = True
        # The poll loop and a sync request (the Argo CD API stand-in) never apply side by side.
        self._lock = threading.Lock()
        self.error: str | None = None

    def start(self) -> SyncAgent:
        self.sync_once()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def sync_once(self) -> None:
        with self._lock:
            self._sync()

    def _sync(self) -> None:
        head = self._repo.sync()
        rel = pm.read_release(self._repo, self.env)
        if self._first or rel != self._applied:
            self.apply(rel, Revision(head, self._repo.path))
            self._applied, self._first = rel, False
            self.events.append(SyncEvent(time.monotonic(), time.time(), head, rel.id if rel else None))
            log.info("sync-agent: %s now runs %s (%s)", self.env, rel.id if rel else "nothing", head[:12])

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync_once()
            except Exception as exc:  # a failed git read or apply is retried, like Argo CD retries a sync
                # The drill reports the last error if it times out.
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("sync-agent: %s", self.error)


def simulator_applier(simulator_url: str, profiles: Mapping[str, Mapping[str, Any]]) -> Applier:
    """apply(release, _): the fault profile of its vLLM digest (a bad build), or no faults at all."""

    def apply(rel: Release | None, _revision: Revision) -> None:
        faults = dict(profiles.get(rel.vllm_digest, {})) if rel else {}
        r = httpx.put(f"{simulator_url}/admin/faults", json={"reset": True, **faults}, timeout=5)
        r.raise_for_status()

    return apply
