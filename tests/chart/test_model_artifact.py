"""The chart's model source: hub (download by id + revision) or a pinned OCI artifact fetched and verified
by the `model-fetch` init container. The init container's script is run here as rendered (sh + coreutils),
against a real model directory and planted tampering."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.gitops.release import Release
from pipeline.models.content import write_manifest
from tests.chart.conftest import Template, env_files, workload

REPO = "registry.example.com/llm/model"
DIGEST = "sha256:" + "d" * 64


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return workload(docs)["spec"]["template"]["spec"]


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["containers"] if c["name"] == name)


def _release(content: str | None) -> Release:
    pins = {"model_repository": REPO, "model_digest": DIGEST, "model_content_digest": content} if content else {}
    return Release(
        id="0.2.0+gabc1234",
        commit="abc1234",
        chart_version="0.1.0",
        gateway_digest="sha256:" + "a" * 64,
        vllm_digest="sha256:" + "b" * 64,
        model_revision="rev-42",
        **pins,
    )


def _render(repo_root: Path, helm_template: Template, tmp_path: Path, rel: Release, env: str = "prod") -> Any:
    pins = tmp_path / "release.yaml"
    pins.write_text(yaml.safe_dump(rel.to_values()))
    return helm_template(repo_root / "environments" / env / "values.yaml", pins, env=env)


def test_pinned_artifact_is_fetched_by_digest_and_served_from_the_volume(
    repo_root: Path, helm_template: Template, tmp_path: Path
) -> None:
    content = "sha256:" + "e" * 64
    pod = _pod(_render(repo_root, helm_template, tmp_path, _release(content)))
    (init,) = pod["initContainers"]
    assert init["name"] == "model-fetch"
    assert init["image"] == f"{REPO}@{DIGEST}"
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["MODEL_CONTENT_DIGEST"] == content
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["name"]: m["mountPath"] for m in init["volumeMounts"]} == {"model": env["MODEL_DST"]}
    vllm = _container(pod, "vllm")
    assert "--model=/models/artifact" in vllm["args"]
    assert not [a for a in vllm["args"] if a.startswith("--revision")]
    mount = next(m for m in vllm["volumeMounts"] if m["name"] == "model")
    assert mount == {"name": "model", "mountPath": "/models/artifact", "readOnly": True}
    names = {e["name"] for e in vllm["env"]}
    assert "HF_TOKEN" not in names and "HF_HUB_OFFLINE" in names  # no hub access for an artifact
    assert "--served-model-name=llama-3-8b-instruct" in vllm["args"]
    assert any(v["name"] == "model" and "emptyDir" in v for v in pod["volumes"])


def test_hub_source_keeps_the_download_by_revision_with_the_token(
    repo_root: Path, helm_template: Template, tmp_path: Path
) -> None:
    pod = _pod(_render(repo_root, helm_template, tmp_path, _release(None)))
    assert "initContainers" not in pod
    vllm = _container(pod, "vllm")
    assert "--revision=rev-42" in vllm["args"]
    assert "--model=meta-llama/Meta-Llama-3-8B-Instruct" in vllm["args"]
    assert "HF_TOKEN" in {e["name"] for e in vllm["env"]}
    assert not any(v["name"] == "model" for v in pod["volumes"])


@pytest.mark.parametrize("missing", ["repository", "digest", "contentDigest"])
def test_artifact_source_without_a_full_pin_fails_to_render(
    repo_root: Path, helm_template: Template, missing: str
) -> None:
    pins = {"repository": REPO, "digest": DIGEST, "contentDigest": "sha256:" + "e" * 64}
    sets = ["vllm.model.source=artifact"] + [f"vllm.model.artifact.{k}={v}" for k, v in pins.items() if k != missing]
    err = helm_template(*env_files(repo_root, "dev"), sets=tuple(sets), expect_ok=False)
    assert f"vllm.model.artifact.{missing} must be set" in err


def test_artifact_source_needs_no_hf_token_for_a_gated_model(repo_root: Path, helm_template: Template) -> None:
    pins = {"repository": REPO, "digest": DIGEST, "contentDigest": "sha256:" + "e" * 64}
    sets = ("vllm.model.source=artifact", "vllm.model.gated=true", "vllm.hfToken.secretName=")
    sets += tuple(f"vllm.model.artifact.{k}={v}" for k, v in pins.items())
    docs = helm_template(*env_files(repo_root, "dev"), sets=sets)
    assert _pod(docs)["initContainers"][0]["name"] == "model-fetch"
    hub = helm_template(*env_files(repo_root, "dev"), sets=sets[1:], expect_ok=False)
    assert "vllm.model.gated is true" in hub


@pytest.mark.parametrize("bad", ["huggingface", ""])
def test_unknown_model_source_is_refused_by_the_schema(repo_root: Path, helm_template: Template, bad: str) -> None:
    err = helm_template(*env_files(repo_root, "dev"), sets=(f"vllm.model.source={bad}",), expect_ok=False)
    assert "/vllm/model/source" in err


# --- the init container's script, as rendered, on this machine's sh + coreutils -----------------------


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "image-model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"model_type": "llama"}\n')
    (src / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (src / "sub" / "tokenizer.json").write_text("{}\n")
    return src, write_manifest(src)


def _fetch(
    repo_root: Path, helm_template: Template, tmp_path: Path, src: Path, pinned: str
) -> subprocess.CompletedProcess[str]:
    init = _pod(_render(repo_root, helm_template, tmp_path, _release(pinned)))["initContainers"][0]
    assert init["command"][:2] == ["sh", "-c"]
    dst = tmp_path / "volume"
    dst.mkdir(exist_ok=True)
    (dst / "stale.bin").write_text("left by an earlier attempt")  # an emptyDir survives container restarts
    env = {e["name"]: e["value"] for e in init["env"]}
    env.update(MODEL_SRC=str(src), MODEL_DST=str(dst), PATH="/usr/bin:/bin")
    return subprocess.run(init["command"], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_fetch_copies_and_verifies_the_pinned_model(
    repo_root: Path, helm_template: Template, tmp_path: Path, model: tuple[Path, str]
) -> None:
    src, digest = model
    proc = _fetch(repo_root, helm_template, tmp_path, src, digest)
    assert proc.returncode == 0, proc.stderr
    assert f"{digest} verified (3 files" in proc.stdout
    copied = sorted(p.relative_to(tmp_path / "volume").as_posix() for p in (tmp_path / "volume").rglob("*"))
    assert copied == ["MANIFEST.sha256", "config.json", "model.safetensors", "sub", "sub/tokenizer.json"]
    assert (tmp_path / "volume" / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def test_fetch_fails_closed_on_another_content_digest(
    repo_root: Path, helm_template: Template, tmp_path: Path, model: tuple[Path, str]
) -> None:
    src, digest = model
    other = "sha256:" + "0" * 64
    proc = _fetch(repo_root, helm_template, tmp_path, src, other)
    assert proc.returncode == 1
    assert f"content digest {digest} != pinned {other}" in proc.stderr
    assert not any((tmp_path / "volume").iterdir())  # nothing left for vLLM to serve


def test_fetch_fails_closed_on_a_tampered_file(
    repo_root: Path, helm_template: Template, tmp_path: Path, model: tuple[Path, str]
) -> None:
    src, digest = model
    with (src / "model.safetensors").open("r+b") as f:
        f.write(b"\xff")  # same size, one byte changed; the manifest still claims the original
    proc = _fetch(repo_root, helm_template, tmp_path, src, digest)
    assert proc.returncode == 1
    assert "files differ from MANIFEST.sha256" in proc.stderr and "model.safetensors" in proc.stderr
    assert not any((tmp_path / "volume").iterdir())


def test_fetch_fails_closed_on_a_file_the_manifest_does_not_list(
    repo_root: Path, helm_template: Template, tmp_path: Path, model: tuple[Path, str]
) -> None:
    src, digest = model
    (src / "sub" / "extra.py").write_text("import os\n")
    proc = _fetch(repo_root, helm_template, tmp_path, src, digest)
    assert proc.returncode == 1
    assert "files not listed in MANIFEST.sha256: sub/extra.py" in proc.stderr


def test_fetch_fails_closed_without_a_manifest(
    repo_root: Path, helm_template: Template, tmp_path: Path, model: tuple[Path, str]
) -> None:
    src, digest = model
    (src / "MANIFEST.sha256").unlink()
    proc = _fetch(repo_root, helm_template, tmp_path, src, digest)
    assert proc.returncode == 1
    assert "no MANIFEST.sha256" in proc.stderr
