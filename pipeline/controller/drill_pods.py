"""The rollback drill on pods: the sync agent deploys each GitOps revision as smoke and loadtest do.

At every revision the agent sees, `PodDeployment` renders the env from the GitOps checkout at that
commit (its values, its release pins, the chart they name: chart_render.helm_template_at), adapts it
with the same local profile as `loadtest` (release_pod.prepare: the simulator image stands in for
vLLM, ports published on 127.0.0.1, dev JWKS; each change a recorded substitution) and plays it with
`podman kube play --replace`. Podman 4.3's `--replace` tears the running pod of that name down, then
creates the new one: not a rolling update, so traffic sees a gap (measured per play).

The drill's bad build is carried by the pod: the release the drill marks bad gets the simulator's
fault flags in its vllm container's args (a recorded substitution, so that pod's spec digest differs).
The gateway and vLLM ports, the dev keys and the pod's name stay the same across replacements: traffic
and Prometheus keep one target, and tokens stay valid. `close()` removes the pod and its Secrets by
name (the drill calls it on every exit path).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from app.gateway.tokens import DevKeys
from pipeline.artifacts.chart_render import helm_template_at
from pipeline.artifacts.release_pod import PodImages, PreparedPod, dev_keys, prepare
from pipeline.controller.drill_traffic import longest_gap
from pipeline.gitops.release import Release
from pipeline.gitops.sync_agent import Revision
from pipeline.runtime import pod as pods
from pipeline.runtime.engine import Engine
from pipeline.runtime.procs import free_port

# Its own pod name: a smoke or loadtest pod of the same chart on this machine is not replaced by the drill.
POD_PREFIX = "llm-drill"


@dataclass(frozen=True)
class DrillImages:
    """Built images the drill's releases pin and its pods run."""

    pod: PodImages  # what podman plays: the gateway image, the simulator image standing in for vLLM
    gateway_digest: str  # the release pins (registry digests of a build)
    vllm_digest: str
    commit: str  # the source commit they were built from
    source: str  # where they came from, for the report
    # Where the source release says they live: the drill's releases pin the same, so the env it
    # renders pulls <repository>@<digest> from there (the chart's default registry otherwise).
    registry: str | None = None
    gateway_repository: str | None = None
    vllm_repository: str | None = None


@dataclass
class Play:
    """One revision the agent applied: what ran, how long the replacement took."""

    release: str
    commit: str  # GitOps commit
    spec_digest: str
    started: float  # time.monotonic() at `kube play --replace`
    ready: float  # every readinessProbe passed
    substitutions: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.ready - self.started

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 2)}


def rbac_yaml(rbac: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    YAML(typ="safe", pure=True).dump(dict(rbac), buf)
    return buf.getvalue()


def drill_pod(
    rendered: str,
    env: str,
    images: PodImages,
    pod_dir: Path,
    *,
    name: str,
    keys: tuple[DevKeys, Path],
    ports: tuple[int, int, int] | None = None,
    rbac: str | None = None,
    fault: Sequence[str] = (),
    release: str = "",
    fault_why: str = "the drill's bad build",
) -> PreparedPod:
    """A drill's pod of the rendered env (not played): its own name, the drill's dev keys ((keys, the dir
    `dev_keys` wrote them to): one set for all its pods), the release's flags on the simulator standing in for
    vLLM; each change a recorded substitution. Shared by the rollback drill (one pod per env, replaced) and
    the canary drill (one pod per replica, canary_podman)."""
    pod = prepare(
        rendered,
        env,
        images,
        pod_dir,
        keys=keys,
        ports=ports,
        rbac_yaml=rbac,
        simulator_args=list(fault),
        rename=(name, "the drill's own pod name; a smoke or loadtest pod keeps its own"),
    )
    if rbac is not None:
        pod.local.substitutions.append("configmap rbac: drill limits far above its traffic (as loadtest)")
    if fault:
        pod.local.substitutions.append(f"container vllm: simulator {' '.join(fault)} — release {release}: {fault_why}")
    pod.evidence["pod_spec_digest"] = pod.local.spec_digest()
    return pod


class PodDeployment:
    """The drill's SyncAgent applier: `(release, revision)` → the env's pod at that revision, replaced."""

    def __init__(
        self,
        engine: Engine,
        images: DrillImages,
        env: str,
        work_dir: Path,
        *,
        faults: Mapping[str, Sequence[str]],
        rbac: str | None = None,
        timeout: float = 120.0,
        progress: Callable[[str], None] = lambda _m: None,
        render: Callable[[Path, str, str], str] = helm_template_at,
        play: Callable[..., float] = pods.play,
    ) -> None:
        self.engine, self.images, self.env, self.work_dir = engine, images, env, work_dir
        self.faults, self.rbac, self.timeout, self.progress = faults, rbac, timeout, progress
        self._render, self._play = render, play
        self.name = f"{POD_PREFIX}-{env}"
        self.ports = (free_port(), free_port(), free_port())
        self.keys = dev_keys(work_dir / "keys")
        self.plays: list[Play] = []
        self.current: PreparedPod | None = None
        self._last: pods.LocalPod | None = None
        self._lock = threading.Lock()
        self._closed = False

    def prepared(self, rel: Release, revision: Revision) -> PreparedPod:
        """The env's pod as the checkout renders it at revision.commit (not played)."""
        rendered = self._render(revision.checkout, self.env, revision.commit)
        return drill_pod(
            rendered,
            self.env,
            self.images.pod,
            self.work_dir / "pod",
            name=self.name,
            keys=(self.keys, self.work_dir / "keys"),
            ports=self.ports,
            rbac=self.rbac,
            fault=self.faults.get(rel.id, ()),
            release=rel.id,
        )

    def __call__(self, rel: Release | None, revision: Revision) -> None:
        if rel is None:
            raise RuntimeError(f"{self.env} pins no release at {revision.commit[:12]}: nothing to deploy")
        with self._lock:
            if self._closed:
                return
            pod = self.prepared(rel, revision)
            self._last = pod.local  # what close() removes by name, even if this play fails half-way
            n = len(self.plays) + 1
            self.progress(f"sync: {rel.id} at {revision.commit[:12]} → kube play --replace {pod.local.pod_name}")
            started = time.monotonic()
            self._play(
                self.engine,
                pod.local,
                self.work_dir / f"play-{n}",
                secrets=pod.secrets,
                timeout=self.timeout,
                tls_verify=self.images.pod.tls_verify,
                progress=self.progress,
                fresh=not self.plays,
            )
            ready = time.monotonic()
            self.current = pod
            digest = str(pod.evidence["pod_spec_digest"])
            self.plays.append(Play(rel.id, revision.commit, digest, started, ready, list(pod.local.substitutions)))
            self.progress(f"sync: {rel.id} ready after {ready - started:.1f}s (pod spec {digest[:19]})")

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def gateway_metrics_url(self) -> str:
        """The gateway's internal port (/metrics is not served on the API port)."""
        return f"http://127.0.0.1:{self.ports[2]}"

    def close(self, wait: float = 30.0) -> None:
        """Remove the pod and its Secrets by name; an apply under way (the agent's thread) may finish first."""
        self._closed = True
        got = self._lock.acquire(timeout=wait)
        try:
            if self._last is not None:
                pods.save_logs(self.engine, self._last, self.work_dir / "pod")
                pods.teardown(self.engine, self._last)
        finally:
            if got:
                self._lock.release()


def check_plays(
    plays: Sequence[Play], answers: list[tuple[float, str]], good: str, bad: str
) -> tuple[list[dict[str, Any]], list[str], dict[str, float]]:
    """Each pod the agent played (spec digest, seconds, the traffic gap around the replacement), checked:
    the good release, then the bad one's pod (another spec), then the good one's pod again (the first
    spec, byte for byte). Returns (records, problems, timings)."""
    records: list[dict[str, Any]] = []
    for i, play in enumerate(plays):
        rec = play.record()
        if i:  # the first play had no traffic yet
            gap, seen = longest_gap(answers, play.started, play.ready)
            rec.update(traffic_gap_s=round(gap, 2), traffic_in_gap=seen)
        records.append(rec)
    played = [p.release for p in plays]
    if played != [good, bad, good]:
        return records, [f"pods played: {played}, expected {[good, bad, good]}"], {}
    problems = []
    if plays[1].spec_digest == plays[0].spec_digest:
        problems.append(f"{bad}'s pod has the spec of {good}'s ({plays[0].spec_digest})")
    if plays[2].spec_digest != plays[0].spec_digest:
        problems.append(f"the rollback played {plays[2].spec_digest}, not {good}'s {plays[0].spec_digest}")
    timings: dict[str, float] = {}
    for key, i in (("bad", 1), ("good_again", 2)):
        timings[f"pod_replace_{key}"] = plays[i].seconds
        timings[f"traffic_gap_{key}"] = float(records[i]["traffic_gap_s"])
    return records, problems, timings


def gateway_token(pod: PreparedPod, ttl: int) -> str:
    """A token the pod's gateway accepts (the drill's dev keys, the env's issuer and audience)."""
    return pod.keys.mint(sub="drill", roles=["user"], issuer=pod.issuer, audience=pod.audience, ttl_seconds=ttl)


def find_images(
    remote: str,
    source_env: str,
    work_dir: Path,
    engine: Engine | None,
    engine_reason: str,
    registry_host: tuple[str, bool] | None,
) -> tuple[DrillImages | None, str]:
    """The images of the release `source_env` runs in the GitOps remote (as `loadtest --attach` finds
    them: the gateway by its pinned digest, the same build's simulator image, the embedded registry),
    or (None, why the drill cannot run pods here)."""
    from pipeline.gitops.env_images import env_pod_images

    rel, images, why = env_pod_images(remote, source_env, work_dir, engine, engine_reason, registry_host)
    if rel is None or images is None:
        return None, why or ""
    found = DrillImages(
        images,
        rel.gateway_digest,
        rel.vllm_digest,
        rel.commit,
        f"release {rel.id} of {source_env}",
        registry=rel.registry,
        gateway_repository=rel.gateway_repository,
        vllm_repository=rel.vllm_repository,
    )
    return found, ""
