"""Decides and performs rollbacks: which alerts of a notification name a release to revert, the guard
re-checked on every fresh base (duplicate, already rolled back, not current, stale, bake window, restore of a
failing release, rate limit), the revert push and the Argo CD sync request.

State lives in git only (incident keys and rate-limit history are commit trailers), so the
controller is restartable at any moment: a kill -9 mid-rollback leaves the remote untouched
(nothing was pushed) or fully rolled back (the push happened); the next notification
completes the rollback or is recognised as a duplicate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import threading
from typing import Any

from pipeline.controller.audit import write_audit
from pipeline.controller.config import ControllerConfig
from pipeline.controller.metrics import Metrics
from pipeline.controller.webhook import Alert, WebhookPayload, parse_time
from pipeline.gitops import canary_record, revert
from pipeline.gitops import promotion as pm
from pipeline.gitops.argocd_rollout import ABORTED, PAUSED, live_rollout
from pipeline.gitops.argocd_sync import SyncRequest, request_sync
from pipeline.gitops.repo import Commit, GitOpsRepo, work_dir_for

# Seconds the controller waits for Argo CD's view of the Rollout before reverting anyway.
ROLLOUT_QUERY_TIMEOUT = 2.0
# What the controller says before the revert's own detail when the env's Rollout is paused or aborted.
ROLLOUT_NOTES = {
    ABORTED: "aborted rollout: reverting the promotion so git matches the stable release served",
    PAUSED: "paused rollout: reverting the promotion (the revert aborts it: Argo Rollouts goes back to the stable "
    "release)",
}


def incident_key(env: str, alert: Alert) -> str:
    """One incident = one firing episode of one alert series (fingerprint + startsAt)."""
    fp = alert.fingerprint or hashlib.sha256(json.dumps(alert.labels, sort_keys=True).encode()).hexdigest()[:16]
    name = alert.labels.get("alertname", "")
    return hashlib.sha256(f"{env}|{name}|{fp}|{alert.starts_at}".encode()).hexdigest()[:20]


class Controller:
    """Decides and performs rollbacks; one at a time (git serializes across replicas too)."""

    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.metrics.init_series(cfg.envs)
        if cfg.argocd is not None:
            tokens = {"service": cfg.argocd.token_file}
            if cfg.argocd.root_token_file is not None:
                tokens["root"] = cfg.argocd.root_token_file
            self.metrics.watch_tokens(tokens)
        self._lock = threading.Lock()
        # A fresh private work copy per process: a killed predecessor's copy is never reused.
        cfg.work_root.mkdir(parents=True, exist_ok=True)
        self.repo = GitOpsRepo(cfg.gitops_repo, work_dir_for(cfg.work_root, "controller"))
        # Fast-path memory of handled incidents; git trailers are the durable record.
        self._seen: dict[str, str] = {}

    # -------------------------------------------------------------- audit

    def audit(self, **fields: Any) -> None:
        write_audit(self.cfg.audit_file, **fields)

    # -------------------------------------------------------------- decisions

    def handle(self, payload: WebhookPayload) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        candidates: dict[tuple[str, str], Alert] = {}
        for alert in payload.alerts:
            env = alert.labels.get(self.cfg.env_label, "")
            base = {"alertname": alert.labels.get("alertname", ""), "env": env, "status": alert.status}
            if alert.status != "firing":
                results.append({**base, "outcome": "ignored", "detail": "not firing"})
            elif alert.labels.get(self.cfg.rollback_label) != "true":
                results.append({**base, "outcome": "ignored", "detail": f'no {self.cfg.rollback_label}="true" label'})
            elif not env:
                results.append({**base, "outcome": "ignored", "detail": f"no {self.cfg.env_label} label"})
            elif alert.labels.get(self.cfg.cause_label, "release") != "release":
                cause = alert.labels[self.cfg.cause_label]
                self.metrics.rollbacks.labels(env=env, outcome="dependency").inc()
                results.append(
                    {
                        **base,
                        "outcome": "dependency",
                        "detail": f"{self.cfg.cause_label}={cause}: a dependency failure, not an error of the release",
                    }
                )
            elif env not in self.cfg.envs:
                self.metrics.rollbacks.labels(env=env, outcome="unknown_env").inc()
                results.append(
                    {**base, "outcome": "unknown_env", "detail": f"env {env!r} is not one of {self.cfg.envs}"}
                )
            else:
                # One incident per env and named release: the earliest-starting alert of each.
                key = (env, alert.labels.get(self.cfg.release_label, ""))
                if key not in candidates or alert.starts_at < candidates[key].starts_at:
                    candidates[key] = alert
        done: set[str] = set()
        for (env, _release), alert in sorted(candidates.items(), key=lambda kv: (kv[0][0], kv[1].starts_at)):
            if env in done:
                results.append(
                    {
                        "alertname": alert.labels.get("alertname", ""),
                        "env": env,
                        "status": alert.status,
                        "outcome": "ignored",
                        "detail": f"{env} already handled by another alert of this notification",
                    }
                )
                continue
            # Releases of this env whose own series fire in this notification: never a restore target.
            failing = {rel for (e, rel) in candidates if e == env and rel}
            r = self._rollback(env, alert, payload.group_key, failing)
            if r["outcome"] in ("rolled_back", "duplicate", "already_rolled_back", "error"):
                done.add(env)
            results.append(r)
        for r in results:
            self.audit(event="decision", group_key=payload.group_key, **r)
        return results

    def _rollback(
        self, env: str, alert: Alert, group_key: str, failing: set[str] | frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        key = incident_key(env, alert)
        named = alert.labels.get(self.cfg.release_label, "")
        base: dict[str, Any] = {
            "alertname": alert.labels.get("alertname", ""),
            "env": env,
            "status": "firing",
            "incident": key,
            "release": named or None,
        }
        with self._lock:
            if key in self._seen:
                self.metrics.rollbacks.labels(env=env, outcome="duplicate").inc()
                return {**base, "outcome": "duplicate", "detail": f"incident already handled: {self._seen[key]}"}
            # Live phase from Argo CD (paused/aborted/...); the git record is read on the fresh base by the guard.
            # The revert happens whatever the phase, so an unreachable Argo CD may delay it by ROLLOUT_QUERY_TIMEOUT only.
            argocd = self.cfg.argocd
            if argocd is not None:
                argocd = dataclasses.replace(argocd, timeout=min(argocd.timeout, ROLLOUT_QUERY_TIMEOUT))
            live = live_rollout(argocd, env)
            seen: dict[str, Any] = {}
            reason = f"alert {base['alertname']} firing since {alert.starts_at}" + (
                f": {alert.annotations['summary']}" if alert.annotations.get("summary") else ""
            )
            opts = revert.RollbackOptions(
                env=env,
                reason=reason,
                actor=self.cfg.actor,
                gitops_repo=self.cfg.gitops_repo,
                trigger="alert",
                trailers=[
                    ("Alert-Name", base["alertname"]),
                    ("Alert-Fingerprint", alert.fingerprint),
                    ("Alert-Starts-At", alert.starts_at),
                    ("Alert-Release", named or ""),
                    ("Alert-Group-Key", group_key),
                    ("Incident", key),
                ],
                guard=lambda repo, history: self._guard(repo, env, key, alert, history, failing, seen),
                attempts=self.cfg.attempts,
                rollout_observed=(live or {}).get("phase"),
            )
            self.audit(event="rollback_start", **base, rollout_live=live)
            out = revert.execute(opts, self.repo)
            rollout = rollout_view(live, seen.get("record"))
            if rollout is not None:
                base["rollout"] = rollout
            if out.status == "rolled_back":
                # The push is done: the drill measures webhook → revert to here, before the sync request.
                self.audit(event="pushed", env=env, incident=key, commit=out.sha, pin_commit=out.pin_sha)
            outcome, detail = out.status, out.detail
            if outcome == "noop":
                outcome, _, detail = detail.partition(": ")
            elif outcome == "refused":
                outcome = "nothing_to_roll_back"
            self.metrics.rollbacks.labels(env=env, outcome=outcome).inc()
            note = ROLLOUT_NOTES.get(str((rollout or {}).get("state")))
            if note and outcome == "rolled_back":
                detail = f"{note}; {detail}"
            result = {**base, "outcome": outcome, "detail": detail, "commit": out.sha, "pin_commit": out.pin_sha}
            if out.values:
                result["values_diff"] = out.values
            sync: SyncRequest | None = None
            if outcome == "rolled_back":
                self.metrics.last_rollback.labels(env=env).set_to_current_time()
                # The rollback commit carries the env's files; for prod it is also what the pin names.
                sync = self._request_sync(env, out.sha or "")
                self.metrics.syncs.labels(env=env, state=sync.state).inc()
                self.audit(event="sync", env=env, incident=key, **sync.as_dict())
                result.update(detail=f"{detail}; {sync.detail}", sync=sync.as_dict())
            elif outcome == "duplicate" and self.cfg.argocd is not None:
                last = pm.pinned_since(self.repo, env)
                if last is not None and last.trailer("Incident") == key:
                    # A predecessor pushed this rollback and may have died before asking for the sync.
                    sync = self._request_sync(env, last.sha)
                    self.metrics.syncs.labels(env=env, state=sync.state).inc()
                    self.audit(event="sync", env=env, incident=key, **sync.as_dict())
                    result.update(detail=f"{detail}; {sync.detail}", sync=sync.as_dict())
            # A sync Argo CD refused (or never got) is not done: the next notification retries it.
            settled = sync is None or sync.settled
            if outcome in ("rolled_back", "duplicate", "already_rolled_back") and settled:
                self._seen[key] = detail
            return result

    def _request_sync(self, env: str, revision: str) -> SyncRequest:
        """Ask Argo CD to sync the pushed rollback now (the work copy is at the pushed commits)."""
        rel = pm.read_release(self.repo, env)
        return request_sync(
            self.cfg.argocd, self.repo, env, revision, rel.chart_version if rel else "", self.cfg.clock()
        )

    def _guard(
        self,
        repo: GitOpsRepo,
        env: str,
        key: str,
        alert: Alert,
        history: list[Commit],
        failing: set[str] | frozenset[str] = frozenset(),
        seen: dict[str, Any] | None = None,
    ) -> str | None:
        """Re-checked on every fresh base: duplicates, already rolled back, the alert's release and age
        (not the current release, stale, beyond the bake window), rate limit. `seen` gets the env's canary
        record on this base (what git says the Rollout is doing)."""
        if seen is not None:
            seen["record"] = canary_record.read(repo, env)
        for c in history:
            if c.trailer("Incident") == key:
                return f"duplicate: incident {key} already rolled back in {c.sha[:12]}"
        if history and history[0].trailer("Rollback-Env") == env:
            last = history[0]
            return (
                f"already_rolled_back: the current pins of {env} come from rollback {last.sha[:12]} "
                f"({last.trailer('Rollback-Reason')}); going further back needs a human (`pipeline rollback`)"
            )
        named = alert.labels.get(self.cfg.release_label, "")
        current = pm.read_release(repo, env)
        if named and (current is None or named != current.id):
            # The alert is about a release the env no longer (or never) runs: a fix promoted while it
            # fired gets its own evaluation, from its own series; reverting it would restore the culprit.
            running = current.id if current else "nothing promoted"
            return f"not_current: the alert names release {named}; {env} runs {running}"
        started = parse_time(alert.starts_at)
        if history and started is not None:
            pinned = history[0].date
            if started < pinned - dt.timedelta(seconds=self.cfg.stale_tolerance):
                return f"stale: alert started {alert.starts_at}, before the current pins of {env} ({pm.iso(pinned)})"
        now = pm.utcnow()
        if history and (now - history[0].date).total_seconds() > self.cfg.bake_window:
            age = (now - history[0].date).total_seconds()
            what = current.id if current else "the current pins"
            return (
                f"outside_bake_window: {what} was promoted to {env} {age / 3600:.1f} h ago, beyond the "
                f"{self.cfg.bake_window / 3600:g} h bake window: not a release regression, a human decides"
            )
        recent = [
            c
            for c in history
            if c.trailer("Rollback-Env") == env
            and c.trailer("Rollback-Trigger") == "alert"
            and (now - c.date).total_seconds() < self.cfg.rate_window
        ]
        promos = revert.unreverted_promotions(history, env)
        target = promos[1].trailer("Release-Id") if len(promos) > 1 else ""
        if target and target in failing and current is not None:
            return (
                f"restore_failing: rolling back {current.id} would restore {target}, whose own series fire "
                f"{alert.labels.get('alertname', '')} too; a human decides"
            )
        if len(recent) >= self.cfg.rate_limit:
            return (
                f"rate_limited: {len(recent)} automatic rollback(s) of {env} in the last "
                f"{self.cfg.rate_window:.0f}s (limit {self.cfg.rate_limit})"
            )
        return None


def rollout_view(live: dict[str, Any] | None, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The env's rollout for the decision and the audit: the live phase Argo CD reports (paused, aborted,
    progressing, healthy) when it could be asked, else what git's canary record says; None: no Rollout."""
    if live is None and record is None:
        return None
    out: dict[str, Any] = {"state": None, "source": None, "git_state": None, "git_release": None}
    if record is not None:
        out.update(
            state=record.get("state"), source="git", git_state=record.get("state"), git_release=record.get("release")
        )
    if live is not None and "error" in live:
        out["argocd_error"] = live["error"]
    elif live is not None:
        out.update(state=live["phase"], source="argocd", health=live["health"], name=live.get("name"))
    return out
