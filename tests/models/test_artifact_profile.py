"""The local pod profile of a release that pins a model artifact (no engine needed): the chart's
model-fetch init container is kept as rendered and vLLM serves the model volume; a hub-pinned release
keeps today's local model directory."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.artifacts import release_pod
from pipeline.gitops.release import Release
from pipeline.runtime.pod import PodFailed
from pipeline.runtime.tools import require

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = {
    "model_repository": "127.0.0.1:5000/model",
    "model_digest": "sha256:" + "d" * 64,
    "model_content_digest": "sha256:" + "e" * 64,
}
IMAGES = release_pod.PodImages(
    "127.0.0.1:5000/llm/gateway@sha256:" + "a" * 64,
    "127.0.0.1:5000/llm/vllm-cpu@sha256:" + "b" * 64,
    "vllm-cpu",
    tls_verify=False,
)


def _rendered(tmp_path: Path, **pins: str) -> str:
    rel = Release(
        id="0.1.0+g1a2b3c4",
        commit="1a2b3c4" + "0" * 33,
        chart_version="0.1.0",
        gateway_digest="sha256:" + "a" * 64,
        vllm_digest="sha256:" + "b" * 64,
        model_revision="e1945c40cd546c78e41f1151f4db032b271faeaa",
        **pins,  # type: ignore[arg-type]
    )
    values = tmp_path / "release.yaml"
    values.write_text(yaml.safe_dump(rel.to_values()))
    argv = [require("helm"), "template", "llm-service", str(REPO / "charts/llm-service"), "--namespace", "llm-dev"]
    argv += ["-f", str(REPO / "environments/dev/values.yaml"), "-f", str(values)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _spec(prepared: release_pod.PreparedPod) -> dict[str, Any]:
    spec: dict[str, Any] = prepared.local.deployment["spec"]["template"]["spec"]
    return spec


def _vllm(spec: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in spec["containers"] if c["name"] == "vllm")


def test_artifact_release_keeps_the_init_container_and_serves_the_volume(tmp_path: Path) -> None:
    prepared = release_pod.prepare(_rendered(tmp_path, **ARTIFACT), "dev", IMAGES, tmp_path / "work")
    spec = _spec(prepared)
    (init,) = spec["initContainers"]
    assert init["name"] == "model-fetch" and init["image"] == "127.0.0.1:5000/model@sha256:" + "d" * 64
    assert init["securityContext"]["readOnlyRootFilesystem"] is True  # played as rendered
    vllm = _vllm(spec)
    assert "--model=/models/artifact" in vllm["args"] and "--served-model-name=" + prepared.model in vllm["args"]
    assert [m["mountPath"] for m in vllm["volumeMounts"] if m["name"] == "model"] == ["/models/artifact"]
    assert not any(v["name"] == "local-model" for v in spec["volumes"])
    assert not (tmp_path / "work" / "model").exists()  # no host copy of a model
    assert prepared.evidence["model_artifact"] == init["image"]
    assert f"init container model-fetch: kept ({init['image']})" in prepared.evidence["substitutions"]


def test_simulator_pod_of_an_artifact_release_still_fetches_and_verifies(tmp_path: Path) -> None:
    images = release_pod.PodImages(IMAGES.gateway, "127.0.0.1:5000/llm/simulator:t", "simulator", tls_verify=False)
    prepared = release_pod.prepare(_rendered(tmp_path, **ARTIFACT), "dev", images, tmp_path / "work")
    assert [c["name"] for c in _spec(prepared)["initContainers"]] == ["model-fetch"]


def test_hub_release_mounts_the_local_model_directory(tmp_path: Path) -> None:
    rendered = _rendered(tmp_path)
    with pytest.raises(PodFailed, match="needs a model directory"):
        release_pod.prepare(rendered, "dev", IMAGES, tmp_path / "work")
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text("{}\n")
    prepared = release_pod.prepare(rendered, "dev", IMAGES, tmp_path / "work", model_dir=model)
    spec = _spec(prepared)
    assert "initContainers" not in spec
    assert f"--model={release_pod.MODEL_DIR}" in _vllm(spec)["args"]
    assert any(v["name"] == "local-model" and "hostPath" in v for v in spec["volumes"])
    assert prepared.evidence["model_artifact"] is None
