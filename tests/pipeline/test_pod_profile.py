"""The local profile of the chart's pod: every change to the rendered Deployment is recorded (no engine needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.artifacts.images import IMAGES, build_argv, image_tag, pinned_bases
from pipeline.runtime import base_image, registry
from pipeline.runtime.engine import Engine
from pipeline.runtime.pod import ContainerOverride, PodFailed, local_profile

REPO = Path(__file__).resolve().parents[2]


def rendered() -> list[dict[str, Any]]:
    container = {
        "name": "vllm",
        "image": "registry.example.com/llm/vllm@sha256:" + "2" * 64,
        "ports": [{"name": "vllm", "containerPort": 8000}],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "vllm"}},
        "resources": {"limits": {"cpu": "64", "nvidia.com/gpu": 1}, "requests": {"cpu": "1", "nvidia.com/gpu": 1}},
        "securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 10001},
    }
    gateway = {
        "name": "gateway",
        "image": "registry.example.com/llm/gateway@sha256:" + "1" * 64,
        "ports": [{"name": "http", "containerPort": 8080}],
        "envFrom": [{"configMapRef": {"name": "cfg"}}],
        "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
    }
    dep = {
        "kind": "Deployment",
        "metadata": {"name": "llm"},
        "spec": {
            "replicas": 3,
            "template": {
                "spec": {
                    "nodeSelector": {"pool": "gpu"},
                    "tolerations": [{"key": "nvidia.com/gpu"}],
                    "containers": [gateway, container],
                    "volumes": [{"name": "rbac", "configMap": {"name": "rbac"}}, {"name": "m", "emptyDir": {}}],
                }
            },
        },
    }
    cms = [{"kind": "ConfigMap", "metadata": {"name": n}, "data": {"A": "1"}} for n in ("cfg", "rbac", "unused")]
    return [*cms, dep, {"kind": "Service", "metadata": {"name": "svc"}}]


def test_local_profile_records_every_substitution(tmp_path: Path) -> None:
    pod = local_profile(
        rendered(),
        images={"gateway": "127.0.0.1:5000/llm/gateway@sha256:" + "a" * 64},
        host_ports={"gateway": {"http": 18080}, "vllm": {"vllm": 18000}},
        overrides={"vllm": ContainerOverride(args=["--x"], env={"HOME": "/h"}, mounts={"m2": "/m2"}, why="test")},
        host_paths={"m2": tmp_path},
        config_data={"cfg": {"B": "2"}},
        cpus=2,
    )
    spec = pod.deployment["spec"]["template"]["spec"]
    assert "nodeSelector" not in spec and "tolerations" not in spec and pod.deployment["spec"]["replicas"] == 1
    gw, vllm = spec["containers"]
    assert gw["image"].startswith("127.0.0.1:5000/") and vllm["image"].startswith("registry.example.com/")
    assert gw["ports"][0] == {"name": "http", "containerPort": 8080, "hostPort": 18080, "hostIP": "127.0.0.1"}
    assert vllm["resources"] == {"limits": {"cpu": "2"}, "requests": {"cpu": "1"}}
    assert vllm["securityContext"] == {"readOnlyRootFilesystem": True, "runAsUser": 10001}  # as rendered
    assert vllm["args"] == ["--x"] and {"name": "HOME", "value": "/h"} in vllm["env"]
    assert {"name": "m2", "hostPath": {"path": str(tmp_path), "type": "Directory"}} in spec["volumes"]
    assert [c["metadata"]["name"] for c in pod.config_maps] == ["cfg", "rbac"]  # only what the pod uses
    assert pod.config_maps[0]["data"] == {"A": "1", "B": "2"}
    # Podman Secrets are machine-wide: the pod reads ones named after it.
    assert pod.secret_names == ["llm-sec"]
    assert gw["env"][0]["valueFrom"]["secretKeyRef"] == {"name": "llm-sec", "key": "k"}
    assert pod.ready_urls == {"gateway": "http://127.0.0.1:18080/readyz", "vllm": "http://127.0.0.1:18000/health"}
    assert pod.container_name("gateway") == "llm-pod-0-gateway"
    text = "\n".join(pod.substitutions)
    for fragment in ("nodeSelector", "nvidia.com/gpu removed", "cpu 64 capped to 2", "image registry.example.com",
                     "127.0.0.1:18080", "args", "hostPath", "cfg: B", "sec → podman secret(s) llm-sec"):  # fmt: skip
        assert fragment in text
    assert pod.spec_digest().startswith("sha256:") and "kind: Deployment" in pod.yaml()
    assert "Service" not in pod.yaml()


def test_a_probe_port_that_is_not_published_is_refused() -> None:
    with pytest.raises(PodFailed, match="readiness port vllm"):
        local_profile(rendered(), images={}, host_ports={"gateway": {"http": 1}})
    with pytest.raises(PodFailed, match="no port named nope"):
        local_profile(rendered(), images={}, host_ports={"gateway": {"nope": 1}})


def test_build_argv_passes_the_ca_as_a_secret_and_the_wheelhouse_as_a_context(tmp_path: Path) -> None:
    podman = Engine("podman", "/x/podman")
    argv = build_argv(podman, IMAGES["vllm-cpu"], "localhost/x:t", {"V": "1"}, ca=tmp_path / "ca", wheelhouse=tmp_path)
    assert ["--secret", f"id=ca,src={tmp_path / 'ca'}"] == argv[argv.index("--secret") : argv.index("--secret") + 2]
    assert f"wheelhouse={tmp_path}" in argv and "VLLM_FLAVOR=cpu" in argv and argv[-1] == "."
    plain = build_argv(podman, IMAGES["gateway"], "localhost/x:t", {}, ca=None, wheelhouse=tmp_path)
    assert "--secret" not in plain and "--build-context" not in plain
    assert image_tag("0.1.0+gabc.dirty") == "0.1.0-gabc.dirty"


def test_the_dockerfile_pins_its_bases_and_the_base_recipe_is_keyed() -> None:
    bases = pinned_bases(REPO)
    assert set(bases) == {"PYTHON_IMAGE", "VLLM_IMAGE"} and all("@sha256:" in b for b in bases.values())
    assert base_image.local_name().startswith("localhost/llm-base/python:bookworm-")
    assert base_image.qualified("python:3.11@sha256:1") == "docker.io/library/python:3.11@sha256:1"
    assert base_image.qualified("vllm/vllm-openai:v1") == "docker.io/vllm/vllm-openai:v1"
    assert base_image.qualified("127.0.0.1:5000/x/y:1") == "127.0.0.1:5000/x/y:1"


def test_an_external_registry_verifies_tls_and_reads_its_password_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = registry.external("oci://registry.example.com/llm/")
    assert reg.host == "registry.example.com/llm" and reg.tls_verify
    assert reg.ref("llm/gateway:1") == "registry.example.com/llm/llm/gateway:1"
    monkeypatch.delenv(registry.PASSWORD_FILE_ENV, raising=False)
    assert registry.password() is None
    (tmp_path / "pw").write_text("s3cret\n")
    monkeypatch.setenv(registry.PASSWORD_FILE_ENV, str(tmp_path / "pw"))
    assert registry.password() == "s3cret"


def _build_result(images: dict[str, dict[str, str]]) -> Any:
    from pipeline.core.result import Check, StageResult, Status

    skipped = [] if images else [Check(name="image gateway", status=Status.SKIPPED, detail="no engine (test)")]
    return StageResult(stage="build", status=Status.PASSED, checks=skipped, evidence={"images": images})


def test_ci_runs_smoke_and_loadtest_on_the_pod_when_build_pushed_images(tmp_path: Path) -> None:
    from pipeline.stages import loadtest, smoke

    d = "sha256:" + "a" * 64
    pushed = {n: {"ref": f"127.0.0.1:5000/llm/{n}@{d}", "digest": d} for n in ("gateway", "simulator", "vllm-cpu")}
    s = smoke.ci_options({"build": _build_result(pushed)}, None)  # type: ignore[arg-type]
    assert s.pod is not None and s.pod.vllm_kind == "vllm-cpu" and not s.pod.tls_verify and s.fallback is None
    lt = loadtest.ci_options({"build": _build_result(pushed)}, None)  # type: ignore[arg-type]
    assert lt.pod is not None and lt.pod.vllm.endswith(f"simulator@{d}")
    none = smoke.ci_options({"build": _build_result({})}, None)  # type: ignore[arg-type]
    assert none.pod is None and none.fallback and "no engine (test)" in none.fallback
    assert loadtest.ci_options({}, None).fallback  # type: ignore[arg-type]


def test_scan_subject_names_the_pushed_digests() -> None:
    from pipeline.core.result import Check, Status
    from pipeline.stages.scan import _with_built

    g, v = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    built = {"gateway": {"local": "l/g", "digest": g}, "vllm-cpu": {"local": "l/v", "digest": v}}
    checks = [Check(name="image gateway", status=Status.PASSED), Check(name="image vllm-cpu", status=Status.PASSED)]
    subject = _with_built({"kind": "source"}, built, checks)
    assert subject["gateway_digest"] == g and subject["vllm_digest"] == v  # vllm-cpu stands for the vllm pin
    failed = [checks[0], Check(name="image vllm-cpu", status=Status.FAILED)]
    assert "vllm_digest" not in _with_built({"kind": "source"}, built, failed)


def test_every_secret_key_the_rendered_pod_reads_gets_a_local_value(repo_root: Path) -> None:
    """The dev chart's pod reads the gateway's audit key and vLLM's HF token from Secrets: both get values."""
    import yaml

    from pipeline.artifacts.chart_render import helm_template
    from pipeline.artifacts.release_pod import local_secret_values

    docs = [d for d in yaml.safe_load_all(helm_template(repo_root, "dev")) if d]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    refs = {
        (v["valueFrom"]["secretKeyRef"]["name"], v["valueFrom"]["secretKeyRef"]["key"])
        for c in dep["spec"]["template"]["spec"]["containers"]
        for v in c.get("env") or []
        if "secretKeyRef" in (v.get("valueFrom") or {})
    }
    assert {"hf-token"} <= {name for name, _ in refs}  # the chart wires the HF token in dev
    values = local_secret_values(dep, sorted({name for name, _ in refs}))
    assert {(name, key) for name, keys in values.items() for key in keys} == refs
    assert all(len(v) == 48 for keys in values.values() for v in keys.values())


def test_pods_of_different_names_never_share_a_podman_secret() -> None:
    ports = {"gateway": {"http": 18080}, "vllm": {"vllm": 18000}}
    manifests = rendered()
    smoke = local_profile(manifests, images={}, host_ports=ports)
    drill = local_profile(manifests, images={}, host_ports=ports, rename=("llm-drill", "the drill's own pod"))
    assert smoke.secret_names == ["llm-sec"] and drill.secret_names == ["llm-drill-sec"]
    env = drill.deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == "llm-drill-sec"
    given = manifests[3]["spec"]["template"]["spec"]["containers"][0]["env"][0]
    assert given["valueFrom"]["secretKeyRef"]["name"] == "sec"  # the rendered manifests are left as they were
