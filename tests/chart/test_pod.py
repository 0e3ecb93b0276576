"""The rendered pod in a cluster: writable paths, model access, exposure vs NetworkPolicy, drain, scaling."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.runtime.tools import require
from tests.chart.conftest import Template, by_kind, env_files, workload

ENVS = ("dev", "staging", "prod")
MIN = ("vllm.model.id=m/x", "vllm.model.revision=abc", "vllm.model.gated=false")
# Every variable that decides where vLLM, Hugging Face, torch, triton or CUDA write.
CACHE_VARS = (
    "HOME",
    "XDG_CACHE_HOME",
    "VLLM_CACHE_ROOT",
    "VLLM_CONFIG_ROOT",
    "HF_HOME",
    "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_CACHE_DIR",
    "CUDA_CACHE_PATH",
    "TMPDIR",
)


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = workload(docs)["spec"]["template"]["spec"]
    return spec


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["containers"] if c["name"] == name)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _writable_mount(pod: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The emptyDir/PVC volume whose mount contains `path` (longest mount path wins)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [
        m
        for m in container["volumeMounts"]
        if (path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")) and not m.get("readOnly")
    ]
    if not mounts:
        return None
    vol = volumes[max(mounts, key=lambda m: len(m["mountPath"]))["name"]]
    return vol if ("emptyDir" in vol or "persistentVolumeClaim" in vol) else None


def _gi(quantity: str) -> float:
    m = re.fullmatch(r"(\d+)(Mi|Gi|Ti)", quantity)
    assert m, quantity
    return int(m.group(1)) * {"Mi": 1 / 1024, "Gi": 1, "Ti": 1024}[m.group(2)]


@pytest.mark.parametrize("env", ENVS)
def test_every_vllm_write_path_is_a_mounted_volume(repo_root: Path, helm_template: Template, env: str) -> None:
    pod = _pod(helm_template(*env_files(repo_root, env), env=env))
    vllm = _container(pod, "vllm")
    assert vllm["securityContext"]["readOnlyRootFilesystem"] is True
    env_vars = _env(vllm)
    for var in CACHE_VARS:
        assert var in env_vars, f"{var} not set: it would default to a path on the read-only root"
        assert _writable_mount(pod, vllm, env_vars[var]), f"{var}={env_vars[var]} is not on a writable volume"
    # HOME-relative ~/.cache (flashinfer, outlines, pip-less libraries) and the fixed system paths.
    for path in (f"{env_vars['HOME']}/.cache/anything", "/tmp/x", "/dev/shm/x"):
        assert _writable_mount(pod, vllm, path), f"{path} is not writable"
    assert _writable_mount(pod, vllm, env_vars["HF_HOME"])["name"] == "model-cache"  # type: ignore[index]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]
    assert shm["medium"] == "Memory" and _gi(shm["sizeLimit"]) >= 1


def test_shm_below_1gi_is_rejected(helm_template: Template) -> None:
    err = helm_template(sets=(*MIN, "vllm.shmSize=512Mi"), expect_ok=False)
    assert "shmSize" in err


def test_chart_paths_agree_with_the_vllm_image(repo_root: Path, helm_template: Template) -> None:
    """app/Dockerfile's vllm target sets HOME, HF_HOME and VLLM_CACHE_ROOT; the chart must say the same."""
    text = (repo_root / "app/Dockerfile").read_text()
    stage = text.split("AS vllm\n", 1)[1].split("\nFROM ", 1)[0]
    env_block = re.search(r"^ENV (.*?)(?<!\\)\n", stage, re.S | re.M)
    assert env_block
    image_env = dict(re.findall(r"(\w+)=(\S+)", env_block.group(1)))
    chart_env = _env(_container(_pod(helm_template(sets=MIN)), "vllm"))
    for var in ("HOME", "HF_HOME", "VLLM_CACHE_ROOT"):
        assert chart_env[var] == image_env[var], var


def test_hf_token_wired_and_gated_model_needs_a_token_source(helm_template: Template) -> None:
    base = ("vllm.model.id=meta-llama/Meta-Llama-3-8B-Instruct", "vllm.model.revision=abc")
    err = helm_template(sets=base, expect_ok=False)
    assert "vllm.model.gated is true" in err and "vllm.hfToken.secretName" in err
    vllm = _container(_pod(helm_template(sets=(*base, "vllm.hfToken.secretName=hf"))), "vllm")
    assert _env(vllm)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    open_model = _container(_pod(helm_template(sets=(*base, "vllm.model.gated=false"))), "vllm")
    assert "HF_TOKEN" not in _env(open_model)


@pytest.mark.parametrize("env", ENVS)
def test_env_gated_models_have_a_token(repo_root: Path, helm_template: Template, env: str) -> None:
    vllm = _container(_pod(helm_template(*env_files(repo_root, env), env=env)), "vllm")
    assert "secretKeyRef" in _env(vllm)["HF_TOKEN"]


def _admitted(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    np = by_kind(docs, "NetworkPolicy")[0]
    return [
        peer["namespaceSelector"]["matchLabels"]
        for rule in np["spec"]["ingress"]
        if {"port": "http", "protocol": "TCP"} in rule["ports"]
        for peer in rule["from"]
    ]


NGINX = {"kubernetes.io/metadata.name": "ingress-nginx"}
GATEWAY = {"kubernetes.io/metadata.name": "gateway-system"}
PROM = {"kubernetes.io/metadata.name": "monitoring"}


@pytest.mark.parametrize(("env", "expected"), [("dev", [GATEWAY]), ("staging", [GATEWAY]), ("prod", [NGINX, GATEWAY])])
def test_networkpolicy_admits_the_data_plane_of_the_envs_exposure(
    repo_root: Path, helm_template: Template, env: str, expected: list[dict[str, str]]
) -> None:
    docs = helm_template(*env_files(repo_root, env), env=env)
    assert _admitted(docs) == expected  # the API port: the exposures' data planes, not Prometheus
    np = by_kind(docs, "NetworkPolicy")[0]
    prom_ports = [
        r["ports"]
        for r in np["spec"]["ingress"]
        for peer in r["from"]
        if peer["namespaceSelector"]["matchLabels"] == PROM
    ]
    assert prom_ports == [[{"port": "internal", "protocol": "TCP"}, {"port": "vllm", "protocol": "TCP"}]]
    for exposure in by_kind(docs, "Ingress") + by_kind(docs, "HTTPRoute"):
        assert exposure["metadata"]["annotations"]["llm.example.com/data-plane-namespace-labels"]


def test_gateway_api_data_plane_namespace_is_configurable(helm_template: Template) -> None:
    eg = {"kubernetes.io/metadata.name": "envoy-gateway-system"}
    docs = helm_template(
        sets=(
            *MIN,
            "httpRoute.enabled=true",
            "networkPolicy.gatewayNamespaceLabels.kubernetes\\.io/metadata\\.name=envoy-gateway-system",
        )
    )
    assert _admitted(docs) == [eg]


@pytest.mark.parametrize("env", ENVS)
def test_both_containers_drain_and_grace_covers_the_longest_stream(
    repo_root: Path, helm_template: Template, env: str
) -> None:
    pod = _pod(helm_template(*env_files(repo_root, env), env=env))
    gw, vllm = _container(pod, "gateway"), _container(pod, "vllm")
    gw_sleep = gw["lifecycle"]["preStop"]["sleep"]["seconds"]
    vllm_sleep = vllm["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert vllm_sleep >= gw_sleep > 0
    assert pod["terminationGracePeriodSeconds"] > vllm_sleep


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("scheduling.terminationGracePeriodSeconds=120",),
            "scheduling.terminationGracePeriodSeconds (120) must be >=",
        ),
        (("vllm.preStopSleepSeconds=5",), "vllm.preStopSleepSeconds (5) must be >= gateway.preStopSleepSeconds (10)"),
        (("ingress.enabled=true", "ingress.proxyTimeoutSeconds=600"), "ingress.proxyTimeoutSeconds (600) must be <="),
        (("httpRoute.enabled=true", "httpRoute.requestTimeout=10m"), "httpRoute.requestTimeout (10m) must be <="),
        (("scheduling.spot.enabled=true", "scheduling.spot.terminationGracePeriodSeconds=10"), "spot"),
    ],
)
def test_drain_timing_is_validated(helm_template: Template, sets: tuple[str, ...], message: str) -> None:
    assert message in helm_template(sets=(*MIN, *sets), expect_ok=False)


@pytest.mark.parametrize(("kube", "ok"), [("1.29.0", False), ("1.30.0", True), ("1.33.0", True)])
def test_kube_version_matches_the_preStop_sleep_action(chart: Path, kube: str, ok: bool) -> None:
    proc = subprocess.run(
        [require("helm"), "template", "x", str(chart), "--kube-version", kube, *[a for s in MIN for a in ("--set", s)]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode == 0) is ok, proc.stderr
    if ok:
        assert "sleep:" in proc.stdout


@pytest.mark.parametrize("mode", ["hpa", "keda"])
def test_scale_down_is_stabilised_for_model_loads(helm_template: Template, mode: str) -> None:
    docs = helm_template(sets=(*MIN, f"autoscaling.mode={mode}", "autoscaling.scaleDownStabilizationSeconds=1200"))
    if mode == "hpa":
        behavior = by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]["behavior"]
    else:
        behavior = by_kind(docs, "ScaledObject")[0]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 1200
    assert "scaleDownStabilizationSeconds" in helm_template(
        sets=(*MIN, "autoscaling.scaleDownStabilizationSeconds=60"), expect_ok=False
    )
