"""The rollback drill: a bad release is promoted, the real alert fires, git is reverted, errors stop.

Everything is real except the cluster: Prometheus and Alertmanager (Debian packages), the rollback
controller (its own process, talking HTTP), a local GitOps remote, and pipeline.gitops.sync_agent
standing in for Argo CD. With an engine and built images (DrillConfig.images) the agent deploys each
GitOps revision as a pod (pipeline.controller.drill_pods: the env rendered at that commit, the loadtest
local profile, `podman kube play --replace`), so the revert replays the good release's pod; otherwise
the gateway and simulator run as processes from the working tree (pipeline.runtime.local_stack), and
the report says so as a substitution. The alert's expression and labels come from the chart's
PrometheusRule (helm template), with only the time windows shortened; the Alertmanager route matchers
come from the rollback-controller chart's values (drill_monitoring), so the drill fails if they stop
lining up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from ruamel.yaml import YAML

from pipeline.artifacts import chart_render
from pipeline.controller.drill_monitoring import ALERT, alert_state, monitoring
from pipeline.controller.drill_pods import DrillImages, PodDeployment, check_plays, gateway_token, rbac_yaml
from pipeline.controller.drill_timers import REQUEST_LABELS, alertmanager_timers, production_rules
from pipeline.controller.drill_traffic import Traffic
from pipeline.core.context import RunContext
from pipeline.core.result import StageResult, Status
from pipeline.gitops import promotion as pm
from pipeline.gitops.argocd_standin import App, ArgoCDStandIn, project_docs_at, stand_in_for
from pipeline.gitops.argocd_sync import APP_NAME
from pipeline.gitops.evidence import gate_key
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsRepo, ensure_local_remote
from pipeline.gitops.sync_agent import Revision, SyncAgent, simulator_applier
from pipeline.gitops.sync_windows import sync_hold
from pipeline.runtime import pod as pods
from pipeline.runtime.engine import Engine
from pipeline.runtime.procs import free_port, running
from pipeline.runtime.tools import REPO_ROOT

log = logging.getLogger(__name__)
__all__ = ["ALERT", "DrillConfig", "DrillReport", "chart_alert_rules", "run_drill"]


@dataclass
class DrillConfig:
    env: str = field(default_factory=lambda: pm.ENVS[1])
    # Drill timers (production values come from the charts; see production_timers()).
    window: str = "10s"
    interval: str = "1s"
    alert_for: str = "0s"
    error_rate: float = 0.5
    rps: float = 25.0
    timeout: float = 90.0
    # Production timers (drill_timers): the chart's rules unmodified, its scrape/eval intervals, the
    # controller chart's Alertmanager timers, Argo CD's 3-minute polling; the controller's sync
    # request (to a stand-in of Argo CD's API) is what restores the old release.
    production: bool = False
    # Pods: built images and an engine that plays them (the drill command finds them, tests build them).
    # Without both the drill runs processes and records why (`processes_because`).
    images: DrillImages | None = None
    engine: Engine | None = None
    processes_because: str = "no built images were given to the drill"
    pod_timeout: float = 120.0  # per play: `kube play --replace` until every readinessProbe passes
    # Sync windows are judged at this instant (the controller and Argo CD's stand-in), e.g. inside the
    # year-end freeze; the drill's promotions happen at the latest earlier hour no window holds.
    at: dt.datetime | None = None


@dataclass
class DrillReport:
    ok: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    git: dict[str, Any] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)
    production: dict[str, str] = field(default_factory=dict)
    deploy: str = "processes"  # "pods" | "processes"
    substitutions: list[str] = field(default_factory=list)
    # Pods: one record per revision the agent applied (release, GitOps commit, pod spec digest, seconds,
    # the longest traffic gap around it, substitutions).
    plays: list[dict[str, Any]] = field(default_factory=list)
    # Production timers: every sync request the controller sent to Argo CD's stand-in and its answer.
    argocd: list[dict[str, Any]] = field(default_factory=list)
    at: str = ""  # the instant sync windows were judged at ("" = now)


def _yaml_all(text: str) -> list[Any]:
    return [d for d in YAML(typ="safe").load_all(text) if d]


def chart_alert_rules(env: str, cfg: DrillConfig) -> tuple[dict[str, Any], str, dict[str, str]]:
    """The chart's rollback alert for `env` (the one labelled rollback="true") and the recording
    rules it reads, with drill windows (every `[5m]`, `[1h]`, ... becomes `[cfg.window]`).

    Returns (rules file content, alert name, label set the scraped series need to match).
    """
    # Exactly the manifests `render` validated for env (release name, namespace, kube version, values).
    out = chart_render.helm_template(REPO_ROOT, env)
    rule_doc = next(d for d in _yaml_all(out) if d.get("kind") == "PrometheusRule")
    rules = [r for g in rule_doc["spec"]["groups"] for r in g["rules"]]
    alert = next(r for r in rules if r.get("alert") and str((r.get("labels") or {}).get("rollback")) == "true")
    records = [r for r in rules if r.get("record") and re.search(rf"{re.escape(r['record'])}\b", alert["expr"])]
    if not records:
        raise RuntimeError(f"{alert['alert']} reads no recording rule of the chart")

    def shorten(expr: str) -> str:
        return re.sub(r"\[\d+[smhd]\]", f"[{cfg.window}]", expr)

    drill_rules = {
        "groups": [
            {
                "name": "drill",
                "interval": cfg.interval,
                "rules": [
                    *({"record": r["record"], "expr": shorten(r["expr"])} for r in records),
                    {**alert, "expr": shorten(alert["expr"]), "for": cfg.alert_for},
                ],
            }
        ]
    }
    # Give the scraped gateways the labels the chart's selectors expect (namespace, pod, ...); the
    # request's own labels (status, release, cause) come from the gateway.
    target_labels: dict[str, str] = {}
    for r in records:
        for name, op, value in re.findall(r'(\w+)\s*(=~|=)\s*"([^"]*)"', r["expr"]):
            if name in REQUEST_LABELS or (op == "=~" and name != "pod"):
                continue
            target_labels[name] = value.replace(".*", "drill-0") if op == "=~" else value
    return drill_rules, str(alert["alert"]), target_labels


def production_timers(env: str) -> dict[str, str]:
    """What the production settings of the charts give, for the report."""
    y = YAML(typ="safe")
    svc = y.load((REPO_ROOT / "charts" / "llm-service" / "values.yaml").read_text())
    env_values_file = REPO_ROOT / "environments" / env / "values.yaml"
    env_values = y.load(env_values_file.read_text()) if env_values_file.exists() else {}
    env_mon = (env_values or {}).get("monitoring", {}) or {}
    slo = {**svc["monitoring"]["slo"], **(env_mon.get("slo", {}) or {})}
    ctl = y.load((REPO_ROOT / "charts" / "rollback-controller" / "values.yaml").read_text())["alertmanagerConfig"]
    budget = slo["fastBurnRate"] * (1 - slo["availability"])
    return {
        "alert": f"{ALERT}: per-release ratio of cause=release 5xx > {budget:.3g} over 5m and 1h, for {slo['fastBurnFor']}",
        "breach_to_firing": f"≈ 2 scrapes (15s each) + eval (30s) + for {slo['fastBurnFor']}",
        "firing_to_webhook": f"groupWait {ctl['groupWait']} (repeat {ctl['repeatInterval']})",
        "webhook_to_revert": "≈ 1 s (one git transaction)",
        "revert_to_recovered": "Argo CD: up to 3 min polling (timeout.reconciliation) or seconds with a git webhook, + rollout",
    }


def _wait(
    what: str, cond: Callable[[], bool], deadline: float, step: float = 0.2, why: Callable[[], str | None] | None = None
) -> float:
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(step)
    cause = why() if why else None
    raise TimeoutError(f"timed out waiting for {what}" + (f" (last error: {cause})" if cause else ""))


def _drill_release(n: int, bad: bool, images: DrillImages | None = None) -> Release:
    """Release n of the drill. With built images both pin them (the bad build is what its pod carries:
    the simulator's fault flags, drill_pods); without, synthetic digests (the simulator's fault profile)."""

    def h(s: str) -> str:
        return "sha256:" + hashlib.sha256(s.encode()).hexdigest()

    return Release(
        id=f"0.{n}.0+drill{'-bad' if bad else ''}",
        commit=images.commit if images else hashlib.sha1(f"drill{n}".encode()).hexdigest(),  # noqa: S324 - an id
        chart_version="0.1.0",
        gateway_digest=images.gateway_digest if images else h(f"drill-gateway-{n}"),
        vllm_digest=images.vllm_digest if images else h(f"drill-vllm-{n}"),
        model_revision="drill",
        images_built=images is not None,
        registry=images.registry if images else None,
        gateway_repository=images.gateway_repository if images else None,
        vllm_repository=images.vllm_repository if images else None,
    )


def _evidence(rel: Release) -> dict[str, StageResult]:
    # Drill releases are synthetic; their gates are marked as such (subject kind "drill-synthetic"),
    # including the staging SLO gate a drill of prod needs (in real life: `loadtest --env staging --attach`).
    # The digests are asserted by the drill (it plays those images; its gates are not real runs).
    subject = {"kind": "drill-synthetic", "release_id": rel.id, "commit": rel.commit}
    subject.update(gateway_digest=rel.gateway_digest, vllm_digest=rel.vllm_digest)

    def gate(stage: str, env: str | None = None) -> StageResult:
        evidence: dict[str, object] = {"subject": subject, **({"env": env} if env else {})}
        return StageResult(stage=stage, status=Status.PASSED, summary="drill: synthetic gate", evidence=evidence)

    gates = {g: gate(g, pm.ENVS[0] if g == "loadtest" else None) for g in pm.GATE_STAGES}
    for env in pm.ENVS[1:-1]:
        gates[gate_key("loadtest", env)] = gate("loadtest", env)
    return gates


def _promote(remote: str, rel: Release, env: str, work: Path, actor: str, now: dt.datetime | None = None) -> None:
    from pipeline.stages import promote  # the drill promotes through the verb, like an operator

    ctx = RunContext(run_dir=work)
    r = promote.run(
        promote.PromoteOptions(
            to=pm.ENVS[0],
            release=rel,
            evidence=_evidence(rel),
            run_id="drill",
            gitops_repo=remote,
            actor=actor,
            now=now,
        ),
        ctx,
    )
    if not r.ok:
        raise RuntimeError(f"drill: promote {rel.id} to dev refused: {[c.detail for c in r.checks]}")
    if env != pm.ENVS[0]:
        for target in pm.ENVS[1 : pm.ENVS.index(env) + 1]:
            opts = promote.PromoteOptions(
                to=target,
                gitops_repo=remote,
                policy_profile="local",
                approvers=["drill-approver-1", "drill-approver-2"],
                allow_unbuilt_images=True,
                actor=actor,
                now=now,
            )
            r = promote.run(opts, ctx)
            if not r.ok:
                raise RuntimeError(f"drill: promote {rel.id} to {target} refused: {[c.detail for c in r.checks]}")


def open_hour_before(remote: str, env: str, at: dt.datetime, work: Path) -> dt.datetime:
    """The latest full hour before `at` at which no sync window holds `env` (when its promotions happen)."""
    repo = GitOpsRepo(remote, work)
    repo.sync()
    t = at.replace(minute=0, second=0, microsecond=0)
    for _ in range(24 * 62):  # bounded: two months of hours
        if sync_hold(repo, env, t, manual=False) is None:
            return t
        t -= dt.timedelta(hours=1)
    raise RuntimeError(f"drill: no hour in the two months before {at.isoformat()} lets {env} be promoted")


def _audit(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mono(wall: float) -> float:
    """Map a wall-clock time (audit lines, commits) onto time.monotonic()."""
    return time.monotonic() - (time.time() - wall)


def run_drill(work: Path, cfg: DrillConfig, progress: Callable[[str], None] = log.info) -> DrillReport:
    from pipeline.runtime.local_stack import default_rbac, local_stack  # the gateway's module: imported late

    # One line per request would drown the drill's own progress.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report = DrillReport(production=production_timers(cfg.env), at=cfg.at.isoformat() if cfg.at else "")
    work.mkdir(parents=True, exist_ok=True)
    env = cfg.env
    remote = str(ensure_local_remote(work / "gitops.git", REPO_ROOT))
    v1, v2 = _drill_release(1, False, cfg.images), _drill_release(2, True, cfg.images)
    profiles = {v2.vllm_digest: {"error_rate": cfg.error_rate, "error_status": 500}}
    timers: dict[str, Any] = {}
    if cfg.production:
        prod = production_rules(env)
        rules, target_labels, alerts = prod.rules, prod.target_labels, prod.rollback_alerts
        timers = {"scrape_interval": prod.scrape_interval, "eval_interval": prod.eval_interval}
        timers["am_timers"] = alertmanager_timers()
        report.production = {
            'rollback alerts (rollback="true")': ", ".join(alerts),
            "rules": "the chart's rendered PrometheusRule, unmodified",
            "scrape / eval interval": f"{prod.scrape_interval} / {prod.eval_interval}",
            "alertmanager": ", ".join(f"{k} {v}" for k, v in timers["am_timers"].items()),
            "sync": (
                "controller requests it from the Argo CD stand-in (answers as argocd-server: "
                "pipeline/gitops/argocd_standin.py); sync agent polls every 3 min like Argo CD"
            ),
            "sync windows judged at": cfg.at.isoformat() if cfg.at else "now",
        }
        progress(
            f"production timers: alerts {alerts}, {report.production['scrape / eval interval']}, labels {target_labels}"
        )
    else:
        rules, alert, target_labels = chart_alert_rules(env, cfg)
        alerts = (alert,)
        progress(f"alert {alert} from the chart: windows [{cfg.window}], labels {target_labels}")
    promote_at = open_hour_before(remote, env, cfg.at, work / "windows") if cfg.at else None
    _promote(remote, v1, env, work / "promote-v1", "drill", promote_at)
    token_file = work / "webhook-token"
    token_file.write_text(secrets.token_urlsafe(24))
    token_file.chmod(0o600)
    audit_file = work / "controller-audit.jsonl"
    ctl_port = free_port()
    ctl_argv = [
        sys.executable, "-m", "pipeline", "--run-dir", str(work / "controller-run"), "rollback-controller",
        "--host", "127.0.0.1", "--port", str(ctl_port), "--gitops-repo", remote,
        "--audit-file", str(audit_file), "--work-dir", str(work / "controller-work"),
    ]  # fmt: skip
    ctl_env = {"ROLLBACK_CONTROLLER_TOKEN_FILE": str(token_file)}
    if cfg.at:
        ctl_argv += ["--sync-window-time", cfg.at.isoformat()]
    agents: list[SyncAgent] = []

    def on_sync(app: App, _revisions: list[str]) -> None:
        # The app controller applying the env's Application: the sync agent deploys what git says.
        if app.name == APP_NAME.format(env=env):
            agents[0].sync_once()

    at = cfg.at
    # Argo CD's API as argocd-server answers it (pipeline/gitops/argocd_standin.py): the AppProjects of
    # the GitOps repo, Applications as its ApplicationSet generates them, the git generator's 3-min requeue.
    argo: ArgoCDStandIn = stand_in_for(
        remote, project_docs_at(remote), lambda: at or pm.utcnow(), pm.ENVS, on_sync=on_sync, requeue=180.0
    )
    with contextlib.ExitStack() as stack:
        if cfg.production:
            stack.enter_context(argo.serve())
            tokens = {
                "argocd-token": argo.issue_token("llm-service", "rollback-controller"),
                "argocd-root-token": argo.issue_token("llm-platform", "rollback-controller"),
            }
            for key, value in tokens.items():
                (work / key).write_text(value)
                (work / key).chmod(0o600)
            ctl_env.update(
                ARGOCD_SERVER=argo.url,
                ARGOCD_AUTH_TOKEN_FILE=str(work / "argocd-token"),
                ARGOCD_ROOT_TOKEN_FILE=str(work / "argocd-root-token"),
            )
        stack.enter_context(
            running(
                "rollback-controller", ctl_argv, work / "logs" / "controller.log",
                ready_url=f"http://127.0.0.1:{ctl_port}/healthz", env=ctl_env, cwd=REPO_ROOT,
            )
        )  # fmt: skip
        webhook = f"http://127.0.0.1:{ctl_port}/webhook"
        agent_work = work / "sync-agent"
        interval = 180.0 if cfg.production else 0.25  # production: Argo CD polls git every 3 minutes
        deploy: PodDeployment | None = None
        pod_timings: dict[str, float] = {}
        if cfg.images is not None and cfg.engine is not None:
            report.deploy = "pods"
            stack.enter_context(pods.signals_raise())  # SIGTERM too tears the pod down (deploy.close)
            fault = ["--error-rate", f"{cfg.error_rate:g}", "--error-status", "500"]
            deploy = PodDeployment(
                cfg.engine, cfg.images, env, work / "pods", faults={v2.id: fault},
                rbac=rbac_yaml(default_rbac("*")), timeout=cfg.pod_timeout, progress=progress,
            )  # fmt: skip
            stack.callback(deploy.close)  # after the agent stops (callbacks run last-in first-out)
            targets = [deploy.gateway_metrics_url.removeprefix("http://")]  # the internal port serves /metrics
            report.substitutions.append(
                f"images: {cfg.images.source} ({cfg.images.pod.gateway}, {cfg.images.pod.vllm})"
            )
            prom_url, _ = stack.enter_context(
                monitoring(work, rules, targets, target_labels, webhook, token_file, **timers)
            )
            agent = SyncAgent(remote, env, agent_work, deploy, interval=interval)
            agents.append(agent.start())  # plays v1's pod
            stack.callback(agent.stop)
            assert deploy.current is not None
            ttl = int(cfg.timeout) + 600
            traffic = Traffic(deploy.gateway_url, gateway_token(deploy.current, ttl), deploy.current.model, cfg.rps)
        else:
            report.substitutions.append(f"processes instead of pods: {cfg.processes_because}")
            progress(f"processes instead of pods: {cfg.processes_because}")
            # One gateway per release, as a rollout replaces the pods: each runs with GATEWAY_RELEASE of
            # its release (the chart's release.id), so its series carry that `release` label; both share
            # the simulator (v2's vLLM digest is its fault profile). The sync agent moves traffic over.
            app = stack.enter_context(local_stack(work / "stack", gateway_env={"GATEWAY_RELEASE": v1.id}))
            app2 = stack.enter_context(
                local_stack(work / "stack-v2", upstream_url=app.upstream_url, gateway_env={"GATEWAY_RELEASE": v2.id})
            )
            gateways = {v1.id: (app.gateway_url, app.mint()), v2.id: (app2.gateway_url, app2.mint())}
            targets = [s.internal_url.removeprefix("http://") for s in (app, app2)]  # /metrics: internal port
            prom_url, _ = stack.enter_context(
                monitoring(work, rules, targets, target_labels, webhook, token_file, **timers)
            )
            traffic = Traffic(*gateways[v1.id], app.model, cfg.rps)
            simulate = simulator_applier(app.upstream_url, profiles)

            def applier(rel: Release | None, revision: Revision) -> None:
                simulate(rel, revision)
                if rel is not None and rel.id in gateways:
                    traffic.target = gateways[rel.id]

            agent = SyncAgent(remote, env, agent_work, applier, interval=interval)
            agents.append(agent.start())
            stack.callback(agent.stop)
        traffic.start()
        stack.callback(traffic.stop_event.set)
        deadline = time.monotonic() + cfg.timeout

        def healthy_baseline() -> bool:
            # v1's requests are scraped (with its release label) and the rollback alert is quiet.
            q = httpx.get(
                f"{prom_url}/api/v1/query",
                params={"query": f'sum(gateway_requests_total{{release="{v1.id}"}})'},
                timeout=5,
            )
            seen = bool(q.json()["data"]["result"])
            return seen and alert_state(prom_url, alerts) == "inactive"

        def no_baseline() -> str | None:
            q = httpx.get(f"{prom_url}/api/v1/query", params={"query": "gateway_requests_total"}, timeout=5)
            series = [r["metric"] for r in q.json()["data"]["result"]]
            if series and not any("release" in m for m in series):
                return "the gateway's series carry no `release` label: its image predates GATEWAY_RELEASE; rebuild"
            return agent.error

        _wait("a healthy baseline in Prometheus (v1)", healthy_baseline, deadline, why=no_baseline)
        progress(f"v1 {v1.id} healthy in {env}; promoting v2 {v2.id} (bad build)")
        report.marks["promote"] = time.monotonic()
        _promote(remote, v2, env, work / "promote-v2", "drill", promote_at)
        if cfg.production:
            # The bad release rolls out at once (a git webhook to Argo CD); the clock starts there.
            argo.observe_git()
            agent.sync_once()
        _wait(
            "the sync agent to apply v2",
            lambda: any(e.release == v2.id for e in agent.events),
            deadline,
            0.05,
            lambda: agent.error,
        )
        report.marks["breach"] = next(e.at for e in agent.events if e.release == v2.id)
        progress("v2 applied: the simulator now fails requests; waiting for the alert")
        report.marks["firing"] = _wait(
            "the alert to fire", lambda: alert_state(prom_url, alerts) == "firing", deadline, 0.1
        )
        progress("alert firing; waiting for the controller's revert")

        def rolled_back() -> bool:
            return any(a.get("outcome") == "rolled_back" for a in _audit(audit_file))

        _wait("the controller to roll back", rolled_back, deadline, 0.1)
        lines = _audit(audit_file)
        start = next(a for a in lines if a.get("event") == "rollback_start")
        done = next((a for a in lines if a.get("event") == "pushed"), None) or next(
            a for a in lines if a.get("outcome") == "rolled_back"
        )
        report.marks["webhook"] = _mono(dt.datetime.fromisoformat(start["ts"].replace("Z", "+00:00")).timestamp())
        # The `pushed` line is written right after the revert commit was pushed (before the sync request).
        report.marks["revert"] = _mono(dt.datetime.fromisoformat(done["ts"].replace("Z", "+00:00")).timestamp())
        if cfg.production:

            def sync_requests() -> list[float]:
                path = f"/api/v1/applications/{APP_NAME.format(env=env)}/sync"
                return [r["at"] for r in argo.requests if r["path"] == path and r.get("status") == 200]

            def refused() -> str | None:
                bad = [
                    f"{r['method']} {r['path']}: HTTP {r['status']}" for r in argo.requests if r.get("status") != 200
                ]
                return f"Argo CD refused {bad}" if bad else None

            _wait("Argo CD to accept the controller's sync", lambda: bool(sync_requests()), deadline, 0.05, refused)
            report.marks["sync_requested"] = sync_requests()[0]
            progress("Argo CD accepted the controller's sync; the sync agent applies it")
        check = GitOpsRepo(remote, work / "check")
        _wait(
            "the sync agent to apply v1 again",
            lambda: agent.events[-1].release == v1.id,
            deadline,
            0.05,
            lambda: agent.error,
        )
        report.marks["recovered"] = agent.events[-1].at
        progress("v1 applied again; waiting for errors to stop and the alert to resolve")
        _wait("errors to stop", lambda: time.monotonic() - traffic.last_error_at > 2.0, deadline)
        report.marks["errors_stopped"] = traffic.last_error_at
        if cfg.production:
            # Production rate windows take minutes to forget the breach; the drill stops at recovery.
            report.marks["resolved"] = float("nan")
        else:
            report.marks["resolved"] = _wait(
                "the alert to resolve", lambda: alert_state(prom_url, alerts) == "inactive", deadline
            )
        traffic.stop_event.set()
        traffic.join(5)
        report.traffic = dict(traffic.counts)
        if deploy is not None:
            records, problems, pod_timings = check_plays(deploy.plays, traffic.answers, v1.id, v2.id)
            report.plays, report.problems = records, [*report.problems, *problems]

        # Final git state: v1 pinned, a revert commit whose reason is the alert, env frozen.
        check.sync()
        head = check.log(pm.release_path(env), limit=1)[0]
        report.git = {
            "pinned": (pm.read_release(check, env) or v2).id,
            "head": head.sha,
            "subject": head.subject,
            "reason": head.trailer("Rollback-Reason"),
            "alert": head.trailer("Alert-Name"),
            "frozen": pm.read_freeze(check, env).frozen,
            "remote": remote,
        }
        if pm.read_release(check, env) != v1:
            report.problems.append(f"{env} should pin {v1.id}, pins {report.git['pinned']}")
        if head.trailer("Alert-Name") not in alerts or not head.trailer("Reverts"):
            report.problems.append(f"last change of {env} is not a revert triggered by {alerts}: {head.subject}")
        if not report.git["frozen"]:
            report.problems.append(f"{env} is not frozen after the rollback")
        if report.traffic.get("200", 0) == 0:
            report.problems.append("no successful request during the drill")
        if cfg.production:
            report.argocd = [
                {k: r.get(k) for k in ("method", "path", "status")} for r in argo.requests if r["method"] == "POST"
            ]
            if refusal := refused():
                report.problems.append(refusal)

    m = report.marks
    report.timings = {
        "breach_to_firing": m["firing"] - m["breach"],
        "firing_to_webhook": m["webhook"] - m["firing"],
        "webhook_to_revert": m["revert"] - m["webhook"],
        "revert_to_recovered": m["recovered"] - m["revert"],
        "breach_to_revert": m["revert"] - m["breach"],
        "breach_to_recovered": m["recovered"] - m["breach"],
        "recovered_to_resolved": m["resolved"] - m["recovered"],
    }
    report.timings.update(pod_timings)
    if cfg.production:
        report.timings["revert_to_sync_requested"] = m["sync_requested"] - m["revert"]
        report.timings["breach_to_sync_requested"] = m["sync_requested"] - m["breach"]
    target = 120 if cfg.production else 30
    if report.timings["breach_to_revert"] > target:
        report.problems.append(f"breach → revert took {report.timings['breach_to_revert']:.1f}s (target ≤ {target} s)")
    report.ok = not report.problems
    return report
