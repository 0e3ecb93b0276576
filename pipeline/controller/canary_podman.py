"""The canary drill's model-serving pods as the chart's pods: one `podman kube play` per replica.

Each replica is the env's pod as render validates it, rendered once per release with the chart's own
`release.id` (the chart puts it in the gateway's GATEWAY_RELEASE, the `release` label the analysis selects
on), adapted by the drill's shared pod profile (drill_pods.drill_pod → release_pod.prepare: built images
by digest, the simulator image standing in for vLLM with the release's simulator flags, ports on
127.0.0.1, one set of dev keys for every pod so a token is valid on whichever release HAProxy picks), and
played under its own name `<llm-canary>-<env>-<slot>`. How many model pods run is asked of the engine
(`podman pod ps` by that name prefix), not counted here: a pod whose teardown failed still counts.
Prometheus finds each pod's gateway (internal port) and simulator through the same file_sd file
ProcessPods writes (canary_pods.write_targets).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts.chart_render import RenderError, helm_template_argv
from pipeline.artifacts.release_pod import GATEWAY, VLLM, PodImages, PreparedPod, dev_keys
from pipeline.controller.canary_pods import write_targets
from pipeline.controller.drill_pods import drill_pod, gateway_token
from pipeline.core.shell import run_capture, tail
from pipeline.runtime import pod as pods
from pipeline.runtime.engine import Engine
from pipeline.runtime.tools import REPO_ROOT, require

# Its own name prefix: the rollback drill's (llm-drill), smoke's and loadtest's pods are never counted or removed.
POD_PREFIX = "llm-canary"


def release_manifests(root: Path, env: str, release: str) -> str:
    """`helm template` of env exactly as render runs it, with the chart's `release.id` set to `release`."""
    argv = [*helm_template_argv(root, env, helm=require("helm")), "--set-string", f"release.id={release}"]
    proc = run_capture(argv, cwd=root)
    if proc.returncode != 0:
        raise RenderError(f"helm template {env} (release.id={release}): {tail(proc.stderr or proc.stdout)}")
    return proc.stdout


@dataclass
class PlayedPod:
    """One replica played: its slot name, release and the pod podman runs."""

    name: str
    release: str
    prepared: PreparedPod
    ready_s: float

    @property
    def gateway_port(self) -> int:
        return self.prepared.local.host_ports[GATEWAY]["http"]

    @property
    def targets(self) -> list[str]:
        """host:port of the gateway's /metrics (internal port) and the simulator's /metrics."""
        local = self.prepared.local
        return [local.url(GATEWAY, "internal").removeprefix("http://"), local.url(VLLM, "vllm").removeprefix("http://")]


class ChartPods:
    """Start/stop model pods (the chart's pod, played by podman) by name; the engine counts the live ones."""

    deploy = "pods"

    def __init__(
        self,
        engine: Engine,
        images: PodImages,
        env: str,
        work: Path,
        namespace: str,
        *,
        rbac: str | None = None,
        timeout: float = 120.0,
        progress: Callable[[str], None] = lambda _m: None,
        render: Callable[[Path, str, str], str] = release_manifests,
        play: Callable[..., float] = pods.play,
    ) -> None:
        if not engine.can_play_pods:
            raise pods.PodFailed(f"{engine.kind} cannot play pods (`kube play` is podman's)")
        self.engine, self.images, self.env, self.work, self.namespace = engine, images, env, work, namespace
        self.rbac, self.timeout, self.progress = rbac, timeout, progress
        self._render, self._play = render, play
        self.prefix = f"{POD_PREFIX}-{env}"
        work.mkdir(parents=True, exist_ok=True)
        self.keys_dir = work / "keys"
        self.keys = dev_keys(self.keys_dir)
        self.sd_file = work / "targets.json"
        self.model = ""  # the chart's --served-model-name, known once a pod is prepared
        self.pods: dict[str, PlayedPod] = {}
        self.substitutions: list[str] = []  # the first pod's (every pod of a release has the same)
        self._rendered: dict[str, str] = {}
        self._started: dict[str, pods.LocalPod] = {}  # what close() removes, even a pod whose play failed
        self._first: PreparedPod | None = None
        self._lock = threading.Lock()
        write_targets(self.sd_file, [])

    def pod_name(self, name: str) -> str:
        """The podman pod of slot `name` (podman names a played Deployment's pod <name>-pod-0)."""
        return f"{self.prefix}-{name}-pod-0"

    def mint(self, ttl: int) -> str:
        if self._first is None:
            raise RuntimeError("no model pod prepared yet: the env's issuer and audience are unknown")
        return gateway_token(self._first, ttl)

    def start(self, name: str, release: str, simulator_args: Sequence[str]) -> PlayedPod:
        if release not in self._rendered:
            self._rendered[release] = self._render(REPO_ROOT, self.env, release)
        prepared = drill_pod(
            self._rendered[release],
            self.env,
            self.images,
            self.work / name,
            name=f"{self.prefix}-{name}",
            keys=(self.keys, self.keys_dir),
            rbac=self.rbac,
            fault=simulator_args,
            release=release,
            fault_why="this release's simulator profile (the canary's carries the drill's fault)",
        )
        if self._first is None:
            self._first, self.model = prepared, prepared.model
            self.substitutions = list(prepared.local.substitutions)
        with self._lock:
            self._started[name] = prepared.local
        ready = self._play(
            self.engine,
            prepared.local,
            self.work / name / "play",
            secrets=prepared.secrets,
            timeout=self.timeout,
            tls_verify=self.images.tls_verify,
            progress=self.progress,
            fresh=True,  # a pod of this name left by a killed run is removed first
        )
        pod = PlayedPod(name, release, prepared, ready)
        with self._lock:
            self.pods[name] = pod
            self._write_targets()
        return pod

    def stop(self, name: str) -> None:
        with self._lock:
            self.pods.pop(name, None)
            local = self._started.pop(name, None)
            self._write_targets()
        if local is not None:
            pods.save_logs(self.engine, local, self.work / name)
            pods.teardown(self.engine, local, self.work / name / "play" / "pod.yaml")

    def live(self) -> int:
        """Model pods the engine lists under this drill's prefix (any state: created, running, degraded)."""
        return len(live_pods(self.engine, self.prefix))

    def close(self) -> None:
        for name in list(self._started):
            self.stop(name)

    def _write_targets(self) -> None:
        write_targets(self.sd_file, [(p.name, p.targets) for p in self.pods.values()], self.namespace)


def live_pods(engine: Engine, prefix: str) -> list[str]:
    """Names of the pods `podman pod ps` lists whose name starts with `prefix-` (raises when podman fails)."""
    proc = engine.run(["pod", "ps", "--format", "{{.Name}}", "--filter", f"name=^{prefix}-"], timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"podman pod ps: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return [n for n in proc.stdout.split() if n.startswith(f"{prefix}-")]
