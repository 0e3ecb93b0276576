"""Run the chart's pod under podman: `podman kube play` of the rendered Deployment with its ConfigMaps.

The caller renders an environment with `helm template`; `local_profile` turns the rendered
Deployment into what this machine can run, and returns each change as a recorded substitution:
GPU resources and node scheduling removed, CPU limits capped to this machine's cores, images
swapped for the built (pushed) ones, container ports published on 127.0.0.1 through hostPort,
and any container/volume overrides the caller asks for. Everything else — securityContext
(runAsUser, readOnlyRootFilesystem, dropped capabilities), volumes, env, probes, init containers
(the chart's model-fetch: podman 4.3 runs them before the containers and fails `kube play` when
one exits non-zero; the failure names it with its log) — is played as rendered.

`played(...)` creates the Secrets the pod reads (`podman secret create NAME FILE`, a JSON map of
base64 values: podman 4.3 cannot read a played `Secret` document through `secretKeyRef`), plays
the pod, waits until every container's readinessProbe passes through its published port, and
tears the pod and its secrets down by name on every exit path (exception, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from ruamel.yaml import YAML

from pipeline.runtime.engine import Engine

Doc = dict[str, Any]
SCHEDULING_KEYS = ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName")


class PodFailed(RuntimeError):
    """The pod could not be played or never became ready; the message names the container."""


@dataclass
class ContainerOverride:
    """A change to one container of the rendered pod (each one becomes a recorded substitution)."""

    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)  # extra volume name → mountPath (read-only)
    why: str = ""


@dataclass
class LocalPod:
    name: str  # the Deployment's name; podman names the pod <name>-pod-0
    deployment: Doc
    config_maps: list[Doc]
    secret_names: list[str]
    ready_urls: dict[str, str]  # container → readiness URL on 127.0.0.1
    host_ports: dict[str, dict[str, int]]  # container → port name → published host port
    substitutions: list[str]

    @property
    def pod_name(self) -> str:
        return f"{self.name}-pod-0"

    def container_name(self, container: str) -> str:
        return f"{self.pod_name}-{container}"

    def url(self, container: str, port: str) -> str:
        return f"http://127.0.0.1:{self.host_ports[container][port]}"

    def yaml(self) -> str:
        import io

        buf = io.StringIO()
        yaml = YAML()
        yaml.default_flow_style = False
        yaml.dump_all([*self.config_maps, self.deployment], buf)
        return buf.getvalue()

    def spec_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.yaml().encode()).hexdigest()


def load_manifests(text: str) -> list[Doc]:
    return [d for d in YAML(typ="safe").load_all(text) if isinstance(d, dict)]


def _cpu(value: object) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# The model-serving workload: a Deployment, or an Argo Rollouts Rollout with the same pod template.
WORKLOAD_KINDS = ("Deployment", "Rollout")


def local_profile(
    manifests: list[Doc],
    *,
    images: Mapping[str, str],
    host_ports: Mapping[str, Mapping[str, int]],
    overrides: Mapping[str, ContainerOverride] | None = None,
    host_paths: Mapping[str, Path] | None = None,
    config_data: Mapping[str, Mapping[str, str]] | None = None,
    cpus: float | None = None,
    memory_dirs: Path | None = None,
    rename: tuple[str, str] | None = None,
) -> LocalPod:
    """The rendered Deployment (and the ConfigMaps it uses) adapted to this machine; every change recorded.

    rename: (new Deployment name, why) — podman names the pod and its containers after it.
    """
    deployments = [d for d in manifests if d.get("kind") in WORKLOAD_KINDS]
    if len(deployments) != 1:
        raise PodFailed(f"expected one Deployment (or Rollout) in the rendered manifests, found {len(deployments)}")
    dep = copy.deepcopy(deployments[0])
    subs: list[str] = []
    if dep["kind"] == "Rollout":
        # An Argo Rollouts Rollout (rollout.enabled) has a Deployment's pod template; podman plays Deployments.
        subs.append(
            f"Rollout {dep['metadata']['name']} played as a Deployment (one pod; the canary strategy needs a cluster)"
        )
        dep.update(apiVersion="apps/v1", kind="Deployment")
        dep["spec"].pop("strategy", None)
    if rename is not None:
        subs.append(f"deployment {dep['metadata']['name']} renamed {rename[0]} ({rename[1]})")
        dep["metadata"]["name"] = rename[0]
    name = str(dep["metadata"]["name"])
    cpus = cpus or float(os.cpu_count() or 1)
    spec = dep["spec"]["template"]["spec"]
    removed = [k for k in SCHEDULING_KEYS if spec.pop(k, None) is not None]
    if removed:
        subs.append(f"node scheduling removed ({', '.join(removed)}): one local machine")
    dep["spec"]["replicas"] = 1
    if spec.get("restartPolicy", "Always") != "Never":
        # A crash then fails the stage at once with the container's whole log, not a restart loop.
        subs.append(f"restartPolicy {spec.get('restartPolicy', 'Always')} → Never (a crash fails the run at once)")
        spec["restartPolicy"] = "Never"
    ready: dict[str, str] = {}
    published: dict[str, dict[str, int]] = {}
    for c in spec.get("initContainers", []):
        # podman 4.3 runs them in order before the pod's containers (init type "once": removed after
        # success, kept on failure), and `kube play` fails when one exits non-zero.
        subs.append(f"init container {c['name']}: kept ({c.get('image')})")
    for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        cname = str(c["name"])
        res = c.get("resources") or {}
        for kind in ("limits", "requests"):
            block = res.get(kind) or {}
            for key in [k for k in block if "/" in k]:
                block.pop(key)
                subs.append(f"container {cname}: {kind}.{key} removed (no GPU here)")
            if "cpu" in block and _cpu(block["cpu"]) > cpus:
                subs.append(f"container {cname}: {kind}.cpu {block['cpu']} capped to {cpus:g} (this machine's cores)")
                block["cpu"] = f"{cpus:g}"
        if cname in images:
            subs.append(f"container {cname}: image {c.get('image')} → {images[cname]}")
            c["image"] = images[cname]
        ports = {str(p.get("name")): p for p in c.get("ports", [])}
        for pname, hport in (host_ports.get(cname) or {}).items():
            if pname not in ports:
                raise PodFailed(f"container {cname} has no port named {pname}")
            ports[pname]["hostPort"] = hport
            ports[pname]["hostIP"] = "127.0.0.1"
            published.setdefault(cname, {})[pname] = hport
        if published.get(cname):
            subs.append(
                f"container {cname}: ports {', '.join(f'{p}→127.0.0.1:{h}' for p, h in published[cname].items())} "
                "published (the Service's role)"
            )
        probe = (c.get("readinessProbe") or {}).get("httpGet")
        if probe:
            port = probe.get("port")
            probe_port = published.get(cname, {}).get(str(port))
            if probe_port is None:
                raise PodFailed(f"container {cname}: readiness port {port} is not published (host_ports)")
            ready[cname] = f"http://127.0.0.1:{probe_port}{probe.get('path', '/')}"
        ov = (overrides or {}).get(cname)
        if ov is not None:
            if ov.command is not None:
                c["command"] = ov.command
            if ov.args is not None:
                c["args"] = ov.args
            env = [e for e in c.get("env", []) if e.get("name") not in ov.env]
            c["env"] = env + [{"name": k, "value": v} for k, v in ov.env.items()]
            for vol, path in ov.mounts.items():
                c.setdefault("volumeMounts", []).append({"name": vol, "mountPath": path, "readOnly": True})
            what = [w for w, v in (("command", ov.command), ("args", ov.args)) if v is not None]
            what += [f"env {k}" for k in ov.env] + [f"mount {p}" for p in ov.mounts.values()]
            subs.append(f"container {cname}: {', '.join(what)} set ({ov.why})")
    for vol, host_dir in (host_paths or {}).items():
        volumes = [v for v in spec.setdefault("volumes", []) if v.get("name") != vol]
        volumes.append({"name": vol, "hostPath": {"path": str(host_dir), "type": "Directory"}})
        spec["volumes"] = volumes
        subs.append(f"volume {vol}: hostPath {Path(host_dir).name}/ (local files)")
    for v in spec.get("volumes", []):
        if (v.get("emptyDir") or {}).get("medium") == "Memory" and memory_dirs is not None:
            # podman 4.3 mounts a Memory emptyDir on disk, root-owned 0755: the non-root user cannot
            # write it (vLLM's shared memory in /dev/shm). Kubernetes gives a writable tmpfs.
            target = memory_dirs / str(v["name"])
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o1777)
            v.pop("emptyDir")
            v["hostPath"] = {"path": str(target), "type": "Directory"}
            subs.append(
                f"volume {v['name']}: emptyDir(medium: Memory) → a world-writable host dir "
                "(podman 4.3 mounts it root-owned 0755)"
            )
    used_cms = {str(v["configMap"]["name"]) for v in spec.get("volumes", []) if "configMap" in v}
    # Podman Secrets are machine-wide objects: each is named after this pod's Deployment, so pods of
    # other runs (smoke, load test, drill) never read or remove one another's.
    secrets: dict[str, str] = {}  # chart name → podman name
    for c in spec.get("containers", []):
        refs = [src["secretRef"] for src in c.get("envFrom", []) if "secretRef" in src]
        refs += [r for e in c.get("env", []) if (r := (e.get("valueFrom") or {}).get("secretKeyRef"))]
        for src in c.get("envFrom", []):
            if "configMapRef" in src:
                used_cms.add(str(src["configMapRef"]["name"]))
        for ref in refs:
            ref["name"] = secrets.setdefault(str(ref["name"]), f"{name}-{ref['name']}")
    if secrets:
        subs.append(
            f"secret(s) {', '.join(sorted(secrets))} → podman secret(s) {', '.join(sorted(secrets.values()))} "
            "(podman secrets are machine-wide: named after this pod)"
        )
    cms = [copy.deepcopy(d) for d in manifests if d.get("kind") == "ConfigMap" and d["metadata"]["name"] in used_cms]
    for cm in cms:
        changes = (config_data or {}).get(str(cm["metadata"]["name"])) or {}
        for key, value in changes.items():
            cm.setdefault("data", {})[key] = value
            subs.append(f"configmap {cm['metadata']['name']}: {key} set for the local pod")
    return LocalPod(name, dep, cms, sorted(secrets.values()), ready, published, subs)


def _container_states(engine: Engine, pod: LocalPod, containers: list[str]) -> dict[str, tuple[str, int]]:
    """container → (state, restart count); a container podman does not know is ("missing", 0)."""
    states: dict[str, tuple[str, int]] = {}
    for cname in containers:
        fmt = "{{.State.Status}} {{.RestartCount}}"
        proc = engine.run(["container", "inspect", "--format", fmt, pod.container_name(cname)], timeout=60)
        state, _, restarts = proc.stdout.strip().partition(" ")
        states[cname] = (state.lower() or "missing", int(restarts) if restarts.isdigit() else 0)
    return states


def _exit_codes(engine: Engine, pod: LocalPod, containers: list[str]) -> dict[str, tuple[str, int]]:
    """container → (state, exit code); ("missing", 0) for one podman no longer has (a finished init container)."""
    codes: dict[str, tuple[str, int]] = {}
    for cname in containers:
        fmt = "{{.State.Status}} {{.State.ExitCode}}"
        proc = engine.run(["container", "inspect", "--format", fmt, pod.container_name(cname)], timeout=60)
        state, _, code = proc.stdout.strip().partition(" ")
        codes[cname] = (state.lower() or "missing", int(code) if code.lstrip("-").isdigit() else 0)
    return codes


def logs(engine: Engine, pod: LocalPod, container: str, lines: int = 25) -> str:
    proc = engine.run(["logs", "--tail", str(lines), pod.container_name(container)], timeout=60)
    return (proc.stdout + proc.stderr).strip()


# Log lines that name what broke: a read-only path, a missing file, a denied write, a bad entrypoint,
# the chart's model-fetch init container refusing the artifact.
_CAUSE = re.compile(
    r"(Read-only file system|Permission denied|No such file|\[Errno|executable file not found|Error:|model-fetch: )"
)


def diagnosis(log_text: str, tail_lines: int = 8) -> str:
    """The log lines naming a cause (first few), then the tail."""
    lines = log_text.splitlines()
    causes = list(dict.fromkeys(x.strip() for x in lines if _CAUSE.search(x) and "WARNING" not in x))[:6]
    tail = lines[-tail_lines:]
    return "\n".join([*(f"  cause: {c}" for c in causes), *tail])


def teardown(engine: Engine, pod: LocalPod, spec_file: Path | None = None) -> None:
    """Remove the pod and its secrets by name (idempotent)."""
    if spec_file is not None and spec_file.is_file():
        engine.run(["kube", "down", str(spec_file)], timeout=120)
    engine.run(["pod", "rm", "-f", "-t", "5", pod.pod_name], timeout=120)
    for secret in pod.secret_names:
        engine.run(["secret", "rm", secret], timeout=60)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C inside the block, so `finally` tears the pod down."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def play(
    engine: Engine,
    pod: LocalPod,
    work_dir: Path,
    *,
    secrets: Mapping[str, Mapping[str, str]],
    timeout: float = 120.0,
    tls_verify: bool = True,
    progress: Callable[[str], None] = lambda _m: None,
    fresh: bool = True,
) -> float:
    """`podman kube play --replace` of the pod; returns once every readinessProbe passes (seconds).

    fresh: first remove a pod of the same name (a killed run's) and (re)create its Secrets. False:
    `--replace` tears the running pod of that name down and plays this spec (a rollout that is not
    rolling: the old pod is gone before the new one is ready); the Secrets already made are kept.
    Never tears the new pod down: the caller does (`played`, or `teardown` by name).
    """
    if not engine.can_play_pods:
        raise PodFailed(f"{engine.kind} cannot play pods (`kube play` is podman's)")
    missing = [s for s in pod.secret_names if s not in secrets]
    if missing:
        raise PodFailed(f"no value for the Secret(s) {', '.join(missing)} the pod reads")
    work_dir.mkdir(parents=True, exist_ok=True)
    spec_file = work_dir / "pod.yaml"
    spec_file.write_text(pod.yaml())
    if fresh:
        teardown(engine, pod)  # a pod left by a killed run has the same name
    for sname in pod.secret_names:
        if not fresh and engine.run(["secret", "inspect", sname], timeout=60).returncode == 0:
            continue
        path = work_dir / f"secret-{sname}.json"
        values = {k: base64.b64encode(v.encode()).decode() for k, v in secrets[sname].items()}
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        proc = engine.run(["secret", "create", sname, str(path)], timeout=60)
        path.unlink()
        if proc.returncode != 0:
            raise PodFailed(f"podman secret create {sname}: {proc.stderr.strip()}")
    progress(f"pod: podman kube play --replace {pod.pod_name}")
    argv = ["kube", "play", "--replace", f"--tls-verify={'true' if tls_verify else 'false'}", str(spec_file)]
    proc = engine.run(argv, timeout=900)
    (work_dir / "kube-play.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        pod_spec = pod.deployment["spec"]["template"]["spec"]
        inits = [str(c["name"]) for c in pod_spec.get("initContainers", [])]
        names = [str(c["name"]) for c in pod_spec.get("containers", [])]
        init_failures = [
            f"init container {c} ({pod.container_name(c)}) {st}, exit {code}:\n{diagnosis(logs(engine, pod, c, lines=400))}"
            for c, (st, code) in _exit_codes(engine, pod, inits).items()
            if st != "missing" and code != 0
        ]
        states = _container_states(engine, pod, names)
        failed = [f"{c} ({pod.container_name(c)}): {st}" for c, (st, _) in states.items() if st != "running"]
        raise PodFailed(
            f"podman kube play {pod.pod_name}: container(s) not started: {'; '.join(failed) or '?'}\n"
            + "".join(f"{f}\n" for f in init_failures)
            + f"{(proc.stderr or proc.stdout).strip()[-1500:]}"
        )
    return _wait_ready(engine, pod, timeout, progress)


def save_logs(engine: Engine, pod: LocalPod, work_dir: Path) -> None:
    for cname in pod.ready_urls:
        with contextlib.suppress(OSError):
            (work_dir / f"{cname}.log").write_text(logs(engine, pod, cname, lines=400))


@contextlib.contextmanager
def played(
    engine: Engine,
    pod: LocalPod,
    work_dir: Path,
    *,
    secrets: Mapping[str, Mapping[str, str]],
    timeout: float = 120.0,
    tls_verify: bool = True,
    progress: Callable[[str], None] = lambda _m: None,
) -> Iterator[float]:
    """Play the pod, yield once every readinessProbe passes (seconds it took), always tear it down."""
    if not engine.can_play_pods:
        raise PodFailed(f"{engine.kind} cannot play pods (`kube play` is podman's)")
    with signals_raise():
        try:
            yield play(
                engine, pod, work_dir, secrets=secrets, timeout=timeout, tls_verify=tls_verify, progress=progress
            )
        finally:
            save_logs(engine, pod, work_dir)
            teardown(engine, pod, work_dir / "pod.yaml")


def _wait_ready(engine: Engine, pod: LocalPod, timeout: float, progress: Callable[[str], None]) -> float:
    t0 = time.monotonic()
    pending = dict(pod.ready_urls)
    last: dict[str, str] = {}
    next_state_check = 0.0
    with httpx.Client(timeout=2.0) as client:
        while pending:
            elapsed = time.monotonic() - t0
            for cname, url in list(pending.items()):
                try:
                    r = client.get(url)
                    if r.status_code == 200:
                        pending.pop(cname)
                        progress(f"pod: {cname} ready after {elapsed:.0f}s")
                        continue
                    last[cname] = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    last[cname] = type(exc).__name__
            if not pending:
                break
            if elapsed >= next_state_check:
                next_state_check = elapsed + 2.0
                for cname, (state, restarts) in _container_states(engine, pod, list(pending)).items():
                    if restarts or state not in ("running", "created", "configured", "initialized"):
                        what = f"restarted {restarts}x" if restarts else f"is {state}"
                        raise PodFailed(
                            f"container {cname} ({pod.container_name(cname)}) {what} before it was ready:\n"
                            f"{diagnosis(logs(engine, pod, cname, lines=400))}"
                        )
            if elapsed > timeout:
                which = ", ".join(f"{c} ({last.get(c, 'no answer')} at {u})" for c, u in pending.items())
                tails = "\n".join(f"--- {c}:\n{diagnosis(logs(engine, pod, c, lines=400))}" for c in pending)
                raise PodFailed(f"pod {pod.pod_name} never ready after {timeout:.0f}s: {which}\n{tails}")
            time.sleep(0.5)
    return time.monotonic() - t0
