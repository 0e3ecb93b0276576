"""The model artifact with real podman and the embedded registry: build, push by digest, pull and verify;
a tampered artifact and a pin the image does not carry are refused, naming what differs.

The podman tests are slow (an image FROM the cached local Debian base) and FAIL, with the reason, when
podman / docker-registry / debootstrap are missing: `make test` installs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.models import artifact
from pipeline.models.content import write_manifest
from pipeline.runtime import engine, registry

DOMAIN = "llm.test.example"


def _model_dir(root: Path) -> tuple[Path, str]:
    """A small model directory in the HF layout, with its manifest."""
    model = root / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 128}) + "\n")
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}) + "\n")
    (model / "tokenizer.json").write_text("{}\n")
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    return model, write_manifest(model)


def test_build_refuses_a_directory_its_manifest_disowns(tmp_path: Path) -> None:
    model, _ = _model_dir(tmp_path)
    (model / "config.json").write_text("{}\n")
    never = engine.Engine("podman", binary=str(tmp_path / "no-engine"))  # refused before any engine call
    with pytest.raises(artifact.ArtifactError, match=re.escape("config.json")):
        artifact.build_artifact(model, never, "t", base="b", label_domain=DOMAIN, work=tmp_path / "w")
    (model / "MANIFEST.sha256").unlink()
    with pytest.raises(artifact.ArtifactError, match=re.escape("no MANIFEST.sha256")):
        artifact.build_artifact(model, never, "t", base="b", label_domain=DOMAIN, work=tmp_path / "w")


def test_release_pins_only_from_a_pushed_artifact() -> None:
    pushed = {
        "repository": "127.0.0.1:5000/model",
        "digest": "sha256:" + "a" * 64,
        "content_digest": "sha256:" + "b" * 64,
    }
    assert artifact.release_pins(pushed) == {
        "model_repository": "127.0.0.1:5000/model",
        "model_digest": "sha256:" + "a" * 64,
        "model_content_digest": "sha256:" + "b" * 64,
    }
    assert artifact.release_pins(pushed | {"digest": None}) == {}
    assert artifact.release_pins(None) == {}


@pytest.fixture
def pushed(
    podman: engine.Engine, base: str, reg: registry.Registry, tmp_path: Path
) -> Iterator[tuple[artifact.ModelArtifact, Path]]:
    model, _ = _model_dir(tmp_path / "src")
    tag = f"test-{tmp_path.name[-12:].lower()}"
    built = artifact.build_artifact(model, podman, tag, base=base, label_domain=DOMAIN, work=tmp_path / "work")
    check = artifact.push_artifact(podman, built, reg, tag, tmp_path / "work")
    assert check.status.value == "passed", check.detail
    try:
        yield built, model
    finally:
        podman.run(["rmi", "-f", built.local_ref])


@pytest.mark.slow
def test_built_artifact_is_pushed_by_digest_and_pulls_back_verified(
    pushed: tuple[artifact.ModelArtifact, Path], podman: engine.Engine, reg: registry.Registry, tmp_path: Path
) -> None:
    built, model = pushed
    assert built.repository == f"{reg.host}/model" and built.ref == f"{reg.host}/model@{built.digest}"
    assert built.evidence()["ref"] == built.ref  # what `eval --candidate` and ci read from build's evidence
    # The registry serves that manifest, annotated with the content digest (no pull needed to tell the model).
    manifest = httpx.get(
        f"http://{reg.host}/v2/model/manifests/{built.digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    assert manifest.status_code == 200
    assert manifest.json()["annotations"][f"{DOMAIN}/model.content-digest"] == built.content_digest
    out = tmp_path / "pulled"
    assert (
        artifact.pull_model(built.ref or "", out, engine=podman, expected=built.content_digest) == built.content_digest
    )
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert files == sorted(p.relative_to(model).as_posix() for p in model.rglob("*"))
    assert (out / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    # Without a pin the image's own label is the claim checked.
    assert artifact.pull_model(built.ref or "", tmp_path / "again", engine=podman) == built.content_digest


@pytest.mark.slow
def test_a_tampered_artifact_is_refused_naming_the_file(
    pushed: tuple[artifact.ModelArtifact, Path], podman: engine.Engine, reg: registry.Registry, tmp_path: Path
) -> None:
    built, _ = pushed
    # Same label (inherited), one weight file changed after the manifest was written.
    ctx = tmp_path / "tamper"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {built.ref}\nRUN printf x >> /model/model.safetensors\n")
    local = "localhost/llm-test/model-tampered:t"
    proc = podman.run(["build", "-q", "--tls-verify=false", "-t", local, str(ctx)], timeout=600)
    assert proc.returncode == 0, proc.stderr
    try:
        out = tmp_path / "pulled"
        with pytest.raises(artifact.ArtifactError, match=r"model\.safetensors: sha256 .* differs"):
            artifact.pull_model(local, out, engine=podman, expected=built.content_digest)
        assert not out.exists()  # nothing half-written
    finally:
        podman.run(["rmi", "-f", local])


@pytest.mark.slow
def test_a_pin_the_image_is_not_labelled_with_is_refused(
    pushed: tuple[artifact.ModelArtifact, Path], podman: engine.Engine, tmp_path: Path
) -> None:
    built, _ = pushed
    other = "sha256:" + "0" * 64
    with pytest.raises(
        artifact.ArtifactError, match=re.escape(f"labelled {built.content_digest}, the pin says {other}")
    ):
        artifact.pull_model(built.ref or "", tmp_path / "pulled", engine=podman, expected=other)
    assert not (tmp_path / "pulled").exists()
