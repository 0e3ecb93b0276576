"""The release's pod with a pinned model artifact, played by real podman (`kube play`): the chart's
`model-fetch` init container pulls the artifact by digest from the registry, copies and verifies it, and
real vLLM (CPU) serves the copy; a tampered artifact fails the init container and the pod never becomes
ready, with the init container's own reason.

Slow: `build` makes the gateway and vllm-cpu images and the stand-in model artifact and pushes them to
the embedded registry (layers cached after the first run), then vLLM loads the model (≈60 s). FAILS,
with the reason, when podman / docker-registry are missing: `make test` installs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipeline.artifacts import release_pod
from pipeline.artifacts.chart_render import values_args
from pipeline.core.context import RunContext
from pipeline.core.result import StageResult, Status
from pipeline.gitops.release import Release, release_of
from pipeline.runtime import engine, pod
from pipeline.runtime.tools import require
from pipeline.stages import build

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ENV = "dev"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> StageResult:
    """`build` as the pipeline runs it (gateway + vllm-cpu; the CUDA image cannot be built here)."""
    run_dir = tmp_path_factory.mktemp("run")
    opts = build.BuildOptions(skip_dist=True, images=("gateway", "vllm-cpu"))
    result = build.run(opts, RunContext(run_dir=run_dir))
    assert result.status is Status.PASSED, [(c.name, c.detail) for c in result.failures()]
    return result


def _render(rel: Release, tmp_path: Path) -> str:
    """The env as render renders it, with this release's pins as its release.yaml."""
    import subprocess

    pins = tmp_path / "release.yaml"
    pins.write_text(yaml.safe_dump(rel.to_values()))
    env_values = values_args(REPO, ENV)[:2]  # the env's values delta; its pins: this release
    argv = [require("helm"), "template", "llm-service", str(REPO / "charts/llm-service"), "--namespace", f"llm-{ENV}"]
    proc = subprocess.run([*argv, *env_values, "-f", str(pins)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _images(result: StageResult) -> release_pod.PodImages:
    images: dict[str, Any] = result.evidence["images"]
    return release_pod.PodImages(images["gateway"]["ref"], images["vllm-cpu"]["ref"], "vllm-cpu", tls_verify=False)


def _prepared(rendered: str, images: release_pod.PodImages, work: Path) -> release_pod.PreparedPod:
    return release_pod.prepare(rendered, ENV, images, work, rename=("llm-artifact-test", "test pod name"))


def test_build_pins_the_artifact_and_records_the_substitution(built: StageResult) -> None:
    rel = release_of(built)
    assert rel is not None and rel.model_artifact is not None
    evidence = built.evidence["model_artifact"]
    assert rel.model_digest == evidence["digest"] and rel.model_content_digest == evidence["content_digest"]
    assert rel.model_repository == f"{built.evidence['registry']}/model"
    assert any("stand-in" in s and "model artifact" in s for s in built.evidence["substitutions"])
    assert evidence["build_push_s"] > 0 and evidence["model_bytes"] > 0


def test_pod_fetches_verifies_and_serves_the_artifact(
    built: StageResult, podman: engine.Engine, tmp_path: Path
) -> None:
    rel = release_of(built)
    assert rel is not None
    prepared = _prepared(_render(rel, tmp_path), _images(built), tmp_path / "pod")
    spec = prepared.local.deployment["spec"]["template"]["spec"]
    assert [c["image"] for c in spec["initContainers"]] == [rel.model_artifact]
    assert not any(v["name"] == "local-model" for v in spec["volumes"])  # no hostPath copy of a model
    assert prepared.evidence["model_artifact"] == rel.model_artifact
    images = _images(built)
    work = tmp_path / "pod"
    with pod.played(
        podman, prepared.local, work, secrets=prepared.secrets, timeout=400, tls_verify=images.tls_verify
    ) as ready_s:
        running = prepared.running(ready_s)
        models = httpx.get(f"{running.upstream_url}/v1/models", timeout=10).json()["data"]
        assert [(m["id"], m["root"]) for m in models] == [(running.model, "/models/artifact")]
        # What vLLM loaded is the verified copy: its manifest is the pinned content.
        vllm = prepared.local.container_name("vllm")
        proc = podman.run(["exec", vllm, "sha256sum", "/models/artifact/MANIFEST.sha256"], timeout=60)
        assert f"sha256:{proc.stdout.split()[0]}" == rel.model_content_digest, proc.stderr
        reply = httpx.post(
            f"{running.upstream_url}/v1/chat/completions",
            json={"model": running.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] is not None
    print(f"pod ready after {ready_s:.1f}s (init container fetch + verify, vLLM load)")


def test_tampered_artifact_fails_the_init_container_and_the_pod(
    built: StageResult, podman: engine.Engine, tmp_path: Path
) -> None:
    rel = release_of(built)
    assert rel is not None and rel.model_repository
    # The pinned artifact with one weight byte appended, pushed beside it (same label, same manifest).
    ctx = tmp_path / "tamper"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {rel.model_artifact}\nRUN printf x >> /model/model.safetensors\n")
    local = "localhost/llm-test/model-tampered:t"
    proc = podman.run(["build", "-q", "--tls-verify=false", "-t", local, str(ctx)], timeout=600)
    assert proc.returncode == 0, proc.stderr
    digest_file = tmp_path / "digest"
    dest = f"{rel.model_repository}:tampered-test"
    argv = ["push", "--tls-verify=false", "--format", "oci", "--digestfile", str(digest_file), local, dest]
    pushed = podman.run(argv, timeout=600)
    podman.run(["rmi", "-f", local])
    assert pushed.returncode == 0, pushed.stderr
    tampered = rel.model_copy(update={"model_digest": digest_file.read_text().strip()})
    prepared = _prepared(_render(tampered, tmp_path), _images(built), tmp_path / "pod")
    played = pod.played(
        podman, prepared.local, tmp_path / "pod", secrets=prepared.secrets, timeout=120, tls_verify=False
    )
    with pytest.raises(pod.PodFailed) as failed, played:
        pytest.fail("the pod became ready on a tampered model")
    message = str(failed.value)
    print(message)
    assert "init container model-fetch" in message
    assert "files differ from MANIFEST.sha256" in message and "model.safetensors" in message
    assert podman.run(["pod", "exists", prepared.local.pod_name]).returncode != 0  # torn down


def test_eval_serves_the_artifact_as_the_chart_pod(built: StageResult, podman: engine.Engine, tmp_path: Path) -> None:
    """The eval gate as `ci` runs it: the artifact served as the env's pod (model-fetch by digest, the eval's
    serving arguments), the suite through the pod's gateway. A/A: the baseline is the same artifact, so its
    run is the candidate's (same inputs digest) and the verdict passes with b = c = 0; no pod outlives it."""
    from pipeline.core.cache import ResultCache
    from pipeline.models import eval_gate
    from pipeline.models.eval_pod import PodServer
    from pipeline.models.record import load_record
    from pipeline.stages.eval import _pull, release_pins

    rel = release_of(built)
    assert rel is not None and rel.model_artifact is not None
    spec = _pull(rel.model_artifact, tmp_path / "candidate-model", rel.model_content_digest, "candidate")
    assert spec.artifact == rel.model_artifact
    server = PodServer(REPO, ENV, _images(built), release_pins(rel), podman)
    outcome = eval_gate.run_gate(
        spec,
        spec,
        record=load_record(REPO),
        root=REPO,
        work_dir=tmp_path / "eval",
        cache=ResultCache(tmp_path / "cache"),
        timeout=400,
        server=server,
    )
    res = outcome.result
    print({k: res[k] for k in ("verdict", "n_items", "seconds")}, res["candidate"]["vllm_ready_s"])
    assert res["verdict"] == "pass" and res["mcnemar"]["b"] == res["mcnemar"]["c"] == 0
    served_by = res["candidate"]["served_by"]
    assert served_by["kind"] == "pod" and served_by["model_artifact"] == rel.model_artifact
    assert any("eval's serving arguments" in s for s in served_by["substitutions"])
    assert res["candidate"]["score"] >= 0.9 and not res["candidate"]["cached"] and res["baseline"]["cached"]
    left = podman.run(["pod", "ps", "-q", "--filter", "name=llm-eval-"]).stdout.strip()
    assert left == "", left
