"""The canary drill: a canary release walks the chart's canary steps behind a real HAProxy while Locust
drives steady traffic, real Prometheus scrapes both releases, and each analysis step is judged by the
SAME queries and conditions the AnalysisTemplate carries (pipeline/rollout/analysis.py, drill timers).

Verdict: promoted (every step passed → weight 100, the stable's replicas replaced one at a time),
aborted (a Failed analysis: weight 0 on the canary at once; the failing query and its values are recorded)
or paused (an Inconclusive analysis: Argo Rollouts pauses the rollout for a human, canary_steps.rollout_action;
the drill records the inconclusive query and ends). The verdict is committed to the GitOps repo as evidence.
Model pods never exceed `replicas`: the canary takes a replica only after a stable one was drained and
stopped (no surge, as the chart's default `rollout.surge: 0`); each split is Argo Rollouts' (pod_split).

The model pods are the chart's pods played by podman (canary_podman.ChartPods) when the config carries an
engine and built images, counted by the engine; else gateway + simulator processes (canary_pods), recorded
as a substitution with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts.release_pod import PodImages
from pipeline.controller.canary_podman import ChartPods, live_pods
from pipeline.controller.canary_pods import ModelPods, ProcessPods, ServingPod
from pipeline.controller.canary_steps import (
    RunResult,
    drill_timers,
    parse_steps,
    pod_split,
    prometheus_measure,
    rollout_action,
    run_analysis,
    seconds,
)
from pipeline.controller.drill_monitoring import monitoring
from pipeline.gitops import promotion as pm
from pipeline.gitops.repo import GitOpsRepo, Message, ensure_local_remote
from pipeline.rollout import analysis as ra
from pipeline.runtime.engine import Engine
from pipeline.runtime.haproxy import Balancer, haproxy
from pipeline.runtime.procs import ManagedProcess
from pipeline.runtime.tools import REPO_ROOT

log = logging.getLogger(__name__)

FAULTS = ("errors", "latency", "none")
STABLE, CANARY = "0.1.0+stable", "0.2.0+canary"


@dataclass
class CanaryConfig:
    env: str = field(default_factory=lambda: pm.ENVS[1])
    fault: str = "none"
    interval: str = "5s"  # drill timer: every metric's measurement interval (the template's 30s)
    # drill timer: the `window` argument (the chart's 1m); wide enough for min-requests at the first step's
    # weight on a busy 2-core machine
    window: str = "15s"
    scrape: str = "1s"
    replicas: int | None = None  # default: the env's minimum replicas
    users: int = 8  # Locust users (closed loop)
    ttft_ms: float = 40.0  # the stable simulator's latency profile
    itl_ms: float = 4.0
    error_rate: float = 0.05  # fault `errors`: share of 5xx
    latency_factor: float = 3.0  # fault `latency`: TTFT x this
    timeout: float = 240.0
    gitops_repo: str | None = None  # evidence remote (default: a local one in the work dir)
    # Pods: an engine that plays them and built images (the drill command finds them, tests build them);
    # without both the model pods run as processes, for `processes_because`.
    engine: Engine | None = None
    images: PodImages | None = None
    pod_timeout: float = 120.0  # each pod's `kube play` → every readinessProbe passed
    processes_because: str = "no engine or built images: model pods run as processes"


@dataclass
class CanaryReport:
    verdict: str = ""  # "promoted" | "aborted" | "paused" (an Inconclusive analysis: upstream waits for a human)
    paused: bool = False
    fault: str = ""
    exposed_fraction: float = 0.0
    abort_seconds: float | None = None
    failed_requests: int = 0
    broken_streams: int = 0
    total_requests: int = 0
    canary_requests: int = 0
    max_model_pods: int = 0
    replicas: int = 0
    deploy: str = "processes"
    max_model_pods_source: str = ""
    substitutions: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    failing: dict[str, Any] | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def fault_args(cfg: CanaryConfig) -> tuple[list[str], list[str]]:
    """Simulator flags of (stable, canary) for the fault."""
    if cfg.fault not in FAULTS:
        raise ValueError(f"--fault must be one of {', '.join(FAULTS)}, got {cfg.fault!r}")
    stable = ["--ttft-ms", f"{cfg.ttft_ms:g}", "--itl-ms", f"{cfg.itl_ms:g}", "--seed", "1"]
    canary = list(stable)
    if cfg.fault == "errors":
        canary += ["--error-rate", f"{cfg.error_rate:g}", "--error-status", "500"]
    elif cfg.fault == "latency":
        canary[1] = f"{cfg.ttft_ms * cfg.latency_factor:g}"
    return stable, canary


def env_replicas(values: dict[str, Any]) -> int:
    auto = values.get("autoscaling") or {}
    return int(auto.get("minReplicas") or values.get("replicaCount") or 1)


class Sampler(threading.Thread):
    """Samples the number of model pods every `period` seconds; keeps the maximum and the first error
    (a count that cannot be taken is a problem of the drill, not a zero)."""

    def __init__(self, count: Callable[[], int], period: float = 0.2) -> None:
        super().__init__(name="canary-pod-sampler", daemon=True)
        self.count, self.period, self.max, self.samples = count, period, 0, 0
        self.error: str | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.max = max(self.max, self.count())
                self.samples += 1
            except Exception as exc:
                self.error = self.error or f"{type(exc).__name__}: {exc}"
            self.stop_event.wait(self.period)

    def stop(self) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout=self.period + 65)  # one count in flight (podman pod ps: bounded by its timeout)


class Router:
    """Which pod sits in which HAProxy slot, and the release weights applied as per-server weights."""

    def __init__(self, lb: Balancer, replicas: int) -> None:
        self.lb, self.replicas = lb, replicas
        self.slots: dict[str, ServingPod | None] = {
            f"{r}-{i}": None for r in ("stable", "canary") for i in range(replicas)
        }
        self.weight = 0  # canary weight in percent

    def attach(self, slot: str, pod: ServingPod) -> None:
        self.slots[slot] = pod
        self.lb.api.point(self.lb.backend, slot, pod.gateway_port, 0)
        self.apply(self.weight)

    def drain(self, slot: str, bound: float = 15.0) -> None:
        """No new requests to the slot; wait (bounded) until its in-flight requests finished."""
        self.lb.api.disable(self.lb.backend, slot)
        self.slots[slot] = None
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline and self.lb.api.stats(self.lb.backend)[slot].current > 0:
            time.sleep(0.05)

    def apply(self, weight: int) -> None:
        """Canary `weight` %, stable the rest, spread over the live pods of each (HTTPRoute backendRef weights)."""
        self.weight = weight
        live = {r: [s for s, p in self.slots.items() if p and s.startswith(r)] for r in ("stable", "canary")}
        share = {"canary": weight, "stable": 100 - weight}
        n_s, n_c = max(1, len(live["stable"])), max(1, len(live["canary"]))
        scale = {"canary": n_s, "stable": n_c}  # per-server weights in the ratio share/count
        for release, slots in live.items():
            for slot in slots:
                self.lb.api.set_weight(self.lb.backend, slot, share[release] * scale[release])

    def requests(self) -> tuple[int, int]:
        """(canary, all) requests HAProxy sent to the backend's servers since it started."""
        stats = self.lb.api.stats(self.lb.backend)
        canary = sum(s.total for n, s in stats.items() if n.startswith("canary"))
        return canary, sum(s.total for s in stats.values())

    def canary_in_flight(self) -> int:
        return sum(s.current for n, s in self.lb.api.stats(self.lb.backend).items() if n.startswith("canary"))


def _locust(url: str, token_file: Path, out: Path, users: int, model: str) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "loadtests" / "locustfile.py"), "--headless",
        "-H", url, "-u", str(users), "-r", str(users), "-t", "3600s", "--only-summary",
        "--llm-out-dir", str(out), "--token-file", str(token_file), "--model", model,
        "--shape", "steady", "--warmup-s", "0", "--prompt-tokens", "uniform:16:64", "--output-tokens", "fixed:8",
    ]  # fmt: skip


def _samples(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(what: str, cond: Callable[[], bool], deadline: float, step: float = 0.2) -> None:
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise TimeoutError(f"canary drill: timed out waiting for {what}")


def interruptible_children() -> None:
    """Let the processes this one starts take SIGINT. A process started with SIGINT ignored (a background job
    of a non-interactive shell, as a CI runner starts its script) hands SIG_IGN down to every child it execs,
    and Locust then ignores the SIGINT that stops it gracefully: killed after the grace, it writes no
    samples. A handler, unlike SIG_IGN, is reset to the default at exec, so one is installed here."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def stops_cleanly_on_sigterm() -> Iterator[None]:
    """SIGTERM (a caller's timeout, canary_gate's) unwinds the drill like an exception, so each process it
    started is stopped by its own `with`: they run in sessions of their own, which the caller's killpg of
    the drill's group does not reach. The previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_canary_drill(work: Path, cfg: CanaryConfig, progress: Callable[[str], None] = log.info) -> CanaryReport:
    interruptible_children()
    with stops_cleanly_on_sigterm():
        return _run_canary_drill(work, cfg, progress)


def _run_canary_drill(work: Path, cfg: CanaryConfig, progress: Callable[[str], None]) -> CanaryReport:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stable_args, canary_args = fault_args(cfg)
    values = ra.merged_values(REPO_ROOT, cfg.env)
    steps = parse_steps((values.get("rollout") or {}).get("steps") or [])
    analysis = drill_timers(ra.load(REPO_ROOT, cfg.env), cfg.interval, cfg.window)
    replicas = cfg.replicas or env_replicas(values)
    report = CanaryReport(fault=cfg.fault, replicas=replicas)
    template = (values.get("rollout") or {}).get("analysis") or {}
    report.substitutions.append(
        f"drill timers: analysis interval {cfg.interval}, window {cfg.window}, scrape {cfg.scrape} "
        f"(the template's: {analysis_intervals(values)}, window {template.get('window')})"
    )
    work.mkdir(parents=True, exist_ok=True)
    namespace = f"drill-{cfg.env}"
    args = {"namespace": namespace, "canary-release": CANARY}
    started = time.monotonic()
    deadline = started + cfg.timeout
    with contextlib.ExitStack() as stack:
        pods = _model_pods(cfg, work / "pods", namespace, report, progress)
        stack.callback(pods.close)
        lb = stack.enter_context(
            haproxy(work / "haproxy", [f"{r}-{i}" for r in ("stable", "canary") for i in range(replicas)])
        )
        router = Router(lb, replicas)
        sampler = Sampler(pods.live, period=0.2 if pods.deploy == "processes" else 0.5)
        sampler.start()
        stack.callback(sampler.stop)
        for i in range(replicas):
            router.attach(f"stable-{i}", pods.start(f"stable-{i}", STABLE, stable_args))
        report.substitutions += [f"model pod: {sub}" for sub in pods.substitutions]
        token_file = work / "tokens.txt"
        token_file.write_text(pods.mint(int(cfg.timeout) + 600) + "\n")
        token_file.chmod(0o600)
        (work / "empty.token").write_text("unused\n")
        sd = {"job_name": "model-pods", "file_sd_configs": [{"files": [str(pods.sd_file)], "refresh_interval": "1s"}]}
        prom_url, _ = stack.enter_context(
            monitoring(
                _mkdir(work / "monitoring"), {"groups": []}, [], {}, "http://127.0.0.1:9/unused", work / "empty.token",
                scrape_interval=cfg.scrape, eval_interval=cfg.scrape, scrape_configs=[sd],
            )
        )  # fmt: skip
        measure = prometheus_measure(prom_url)
        locust_out = work / "locust"
        locust = ManagedProcess(
            "locust",
            _locust(lb.url, token_file, locust_out, cfg.users, pods.model),
            work / "logs" / "locust.log",
            cwd=REPO_ROOT,
        ).start()
        stack.callback(_stop_locust, locust)
        # Baseline: the stable's series fill one window before the canary takes traffic.
        stable_seen = (
            f'sum(increase(gateway_requests_total{{namespace="{namespace}", release="{STABLE}"}}[{cfg.window}]))'
        )
        _wait("the stable's traffic in Prometheus", lambda: measure(stable_seen) > 0, deadline)
        time.sleep(seconds(cfg.window))
        progress(
            f"baseline: {replicas} stable pod(s) serving; canary {CANARY} (fault {cfg.fault}) walks {len(steps)} steps"
        )
        canary_start: float | None = None
        verdict_run: RunResult | None = None
        for step in steps:
            if step.kind == "setWeight":
                want_canary, _ = pod_split(step.weight, replicas)
                _scale_canary(router, pods, want_canary, (stable_args, canary_args), progress)
                # Prometheus applies discovered targets at most every 5 s (its discovery manager): the
                # canary's pods are scraped before they take traffic, as a ServiceMonitor's would be.
                _wait("Prometheus to scrape the canary", _scraped(measure, namespace, want_canary), deadline)
                router.apply(step.weight)
                canary_start = canary_start or time.monotonic()
                report.steps.append({"setWeight": step.weight, "at": round(time.monotonic() - canary_start, 2)})
                progress(f"setWeight {step.weight}")
            elif step.kind == "pause":
                if step.pause_s is None:
                    report.problems.append("a `pause: {}` step waits for a human: the drill skips it")
                    continue
                time.sleep(min(step.pause_s, max(0.0, deadline - time.monotonic())))
            else:
                run = run_analysis(analysis, args, measure)
                report.steps.append(_run_record(run, router.weight))
                progress(
                    f"analysis at weight {router.weight}: {run.phase}" + (f" ({run.failing})" if run.failing else "")
                )
                if rollout_action(run.phase) != "continue":
                    verdict_run = run
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"canary drill: over {cfg.timeout:.0f}s")
        if verdict_run is not None and rollout_action(verdict_run.phase) == "pause":
            # rollout/analysis.go reconcileStepBasedAnalysisRun: Inconclusive → PauseReasonInconclusiveAnalysis.
            # The rollout stays at its weight and pods until a human resumes or aborts it; the drill has no
            # human, so it records the pause and ends there (its pods are removed with the drill).
            report.verdict, report.paused = "paused", True
            report.failing = _failing(verdict_run)
            progress(f"paused at weight {router.weight}: {verdict_run.failing} inconclusive {report.failing['values']}")
        elif verdict_run is not None:
            router.apply(0)  # abort: the canary gets no new request, at once
            _wait("the canary's in-flight requests", lambda: router.canary_in_flight() == 0, deadline, 0.05)
            assert canary_start is not None
            report.abort_seconds = round(time.monotonic() - canary_start, 2)
            report.verdict = "aborted"
            report.failing = _failing(verdict_run)
            _scale_canary(router, pods, 0, (stable_args, canary_args), progress)  # the stable back to `replicas`
            progress(f"aborted after {report.abort_seconds}s: {verdict_run.failing} {report.failing['values']}")
        else:
            router.apply(100)
            # The stable's replicas replaced one at a time.
            _scale_canary(router, pods, replicas, (stable_args, canary_args), progress)
            report.verdict = "promoted"
            progress("promoted: every step passed; the canary serves all replicas")
        time.sleep(2.0)  # traffic keeps flowing on the final state
        _stop_locust(locust)
        sampler.stop()
        report.canary_requests, report.total_requests = router.requests()
    if isinstance(pods, ChartPods) and (left := live_pods(pods.engine, pods.prefix)):
        report.problems.append(f"model pods left after the drill: {left}")
    if sampler.error:
        report.problems.append(f"counting model pods failed: {sampler.error}")
    samples = _samples(locust_out / "samples.jsonl")
    report.failed_requests = sum(1 for s in samples if not s["ok"])
    report.broken_streams = sum(1 for s in samples if not s["ok"] and int(s.get("status") or 0) == 200)
    if not samples:
        report.problems.append("Locust recorded no request (see logs/locust.log)")
    report.exposed_fraction = round(report.canary_requests / max(1, report.total_requests), 4)
    report.max_model_pods = sampler.max
    report.seconds = round(time.monotonic() - started, 1)
    if report.max_model_pods > replicas:
        report.problems.append(f"{report.max_model_pods} model pods ran at once, more than replicas {replicas}")
    report.evidence = commit_verdict(cfg, report, work)
    return report


def _model_pods(
    cfg: CanaryConfig, work: Path, namespace: str, report: CanaryReport, progress: Callable[[str], None]
) -> ModelPods:
    """The chart's pods where an engine plays them and built images exist, else processes (recorded)."""
    if cfg.engine is not None and cfg.images is not None:
        from pipeline.controller.drill_pods import rbac_yaml
        from pipeline.runtime.local_stack import default_rbac  # the gateway's module: imported late

        pods = ChartPods(
            cfg.engine, cfg.images, cfg.env, work, namespace,
            rbac=rbac_yaml(default_rbac("*")), timeout=cfg.pod_timeout, progress=progress,
        )  # fmt: skip
        report.deploy = "pods"
        report.max_model_pods_source = f"podman pod ps --filter name=^{pods.prefix}- (every state), every 0.5 s"
        report.substitutions.append(
            f"model pods: the env's chart pod per replica (podman kube play {pods.prefix}-<slot>), gateway "
            f"{cfg.images.gateway}, simulator image {cfg.images.vllm} standing in for vLLM with each release's flags"
        )
        return pods
    report.deploy = "processes"
    report.max_model_pods_source = "live simulator processes, by PID"
    report.substitutions.append(f"model pods: processes (gateway + simulator per replica): {cfg.processes_because}")
    return ProcessPods(work, namespace)


def _failing(run: RunResult) -> dict[str, Any]:
    return {
        "metric": run.failing,
        "phase": str(run.phase),
        "query": run.failing_query,
        "values": run.values(run.failing or ""),
    }


def analysis_intervals(values: dict[str, Any]) -> str:
    metrics = ((values.get("rollout") or {}).get("analysis") or {}).get("metrics") or []
    return "interval " + "/".join(sorted({str(m.get("interval")) for m in metrics}))


def _scale_canary(
    router: Router, pods: ModelPods, want: int, flags: tuple[list[str], list[str]], progress: Callable[[str], None]
) -> None:
    """Move replicas between the releases one at a time; a pod of one release stops before one of the other starts."""
    replicas = router.replicas
    while True:
        canaries = [s for s, p in router.slots.items() if p and s.startswith("canary")]
        stables = [s for s, p in router.slots.items() if p and s.startswith("stable")]
        if len(canaries) < want:
            if stables:
                router.drain(stables[-1])
                pods.stop(stables[-1])
            slot = next(s for s, p in router.slots.items() if p is None and s.startswith("canary"))
            router.attach(slot, pods.start(slot, CANARY, flags[1]))
            progress(f"replica {slot} runs the canary ({len(canaries) + 1}/{replicas})")
        elif len(canaries) > want:
            router.drain(canaries[-1])
            pods.stop(canaries[-1])
            slot = next(s for s, p in router.slots.items() if p is None and s.startswith("stable"))
            router.attach(slot, pods.start(slot, STABLE, flags[0]))
        else:
            return


def _run_record(run: RunResult, weight: int) -> dict[str, Any]:
    return {
        "analysis": str(run.phase),
        "weight": weight,
        "failing": run.failing,
        "measurements": [asdict(m) | {"phase": str(m.phase)} for m in run.measurements],
    }


def commit_verdict(cfg: CanaryConfig, report: CanaryReport, work: Path) -> dict[str, Any]:
    """The verdict as one GitOps commit: environments/<env>/evidence/canary/<canary>.json."""
    remote = cfg.gitops_repo or str(ensure_local_remote(work / "gitops.git", REPO_ROOT))
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", CANARY)
    path = f"environments/{cfg.env}/evidence/canary/{safe}.json"
    record = {k: v for k, v in asdict(report).items() if k not in ("evidence", "steps")}
    record.update(kind="canary-drill", release_id=CANARY, stable_release_id=STABLE, env=cfg.env, at=pm.iso(pm.utcnow()))
    record["steps"] = [{k: v for k, v in s.items() if k != "measurements"} for s in report.steps]

    def mutate(repo: GitOpsRepo) -> Message:
        pm.write_json(repo.file(path), record)
        failing = report.failing or {}
        return Message(
            subject=f"evidence({cfg.env}): canary drill {report.verdict} {CANARY} (fault {cfg.fault})",
            body=(
                f"failing: {failing.get('metric')} {failing.get('values')}\n{failing.get('query', '')}"
                if failing
                else "every step passed"
            )[:2000],
            trailers=[
                ("Evidence-Env", cfg.env),
                ("Canary-Verdict", report.verdict),
                ("Release-Id", CANARY),
                ("Evidence", path),
            ],
            author="canary-drill",
        )

    tx = GitOpsRepo(remote, work / "evidence-work").transact(mutate)
    return {"remote": remote, "sha": tx.sha, "path": path}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _stop_locust(locust: ManagedProcess, grace: float = 20.0) -> None:
    """SIGINT: Locust's KeyboardInterrupt path runs its `quitting` listeners (samples.jsonl); its SIGTERM
    handler is installed too late to count on. SIGTERM/SIGKILL by PID after `grace`."""
    if locust.alive() and locust.proc is not None:
        locust.signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            locust.proc.wait(timeout=grace)
    locust.stop()


def _scraped(measure: Callable[[str], float], namespace: str, canary_pods: int) -> Callable[[], bool]:
    """True once Prometheus scrapes the gateway and the simulator of every canary pod."""
    up = f'sum(up{{namespace="{namespace}", pod=~"canary-.*"}}) or vector(0)'
    return lambda: measure(up) >= 2 * canary_pods
