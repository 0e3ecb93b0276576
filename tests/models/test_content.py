"""MANIFEST.sha256 and the content digest: sha256sum-compatible, location-independent, tamper-evident."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.models import content


def _model_dir(path: Path) -> Path:
    (path / "sub").mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}\n')
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (path / "tokenizer.json").write_text("{}\n")
    (path / "sub" / "extra.txt").write_text("nested\n")
    return path


def test_manifest_is_sorted_sha256sum_lines_without_itself(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m")
    digest = content.write_manifest(d)
    lines = (d / content.MANIFEST).read_text().splitlines()
    paths = [line.split("  ", 1)[1] for line in lines]
    assert paths == sorted(paths) == ["config.json", "model.safetensors", "sub/extra.txt", "tokenizer.json"]
    for line in lines:
        hexdigest, rel = line.split("  ", 1)
        assert hexdigest == hashlib.sha256((d / rel).read_bytes()).hexdigest()
    assert digest == "sha256:" + hashlib.sha256((d / content.MANIFEST).read_bytes()).hexdigest()
    assert content.content_digest(d) == digest
    # Rewriting does not list the manifest itself.
    assert content.write_manifest(d) == digest


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="coreutils sha256sum not installed")
def test_coreutils_sha256sum_accepts_the_manifest_as_the_init_container_does(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m")
    digest = content.write_manifest(d)
    check = subprocess.run(["sha256sum", "-c", "--strict", content.MANIFEST], cwd=d, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    whole = subprocess.run(["sha256sum", content.MANIFEST], cwd=d, capture_output=True, text=True, check=True)
    assert "sha256:" + whole.stdout.split()[0] == digest
    (d / "tokenizer.json").write_text("{ }\n")
    assert subprocess.run(["sha256sum", "-c", content.MANIFEST], cwd=d, capture_output=True).returncode != 0


def test_digest_depends_on_content_not_location(tmp_path: Path) -> None:
    a = content.write_manifest(_model_dir(tmp_path / "a"))
    b = content.write_manifest(_model_dir(tmp_path / "elsewhere" / "b"))
    assert a == b
    (tmp_path / "a" / "config.json").write_text('{"model_type": "mistral"}\n')
    assert content.write_manifest(tmp_path / "a") != b


def test_verify_passes_an_untouched_directory(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m")
    digest = content.write_manifest(d)
    content.verify(d, digest)
    content.verify(d)


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 10), "model.safetensors"),
        (lambda d: (d / "sub" / "extra.txt").unlink(), "sub/extra.txt: listed in MANIFEST.sha256 but missing"),
        (lambda d: (d / "planted.bin").write_bytes(b"x"), "planted.bin: present but not listed"),
    ],
)
def test_verify_names_the_tampered_file(tmp_path: Path, tamper, named: str) -> None:  # type: ignore[no-untyped-def]
    d = _model_dir(tmp_path / "m")
    digest = content.write_manifest(d)
    tamper(d)
    with pytest.raises(content.ContentMismatch, match=named):
        content.verify(d, digest)


def test_verify_refuses_another_content_digest_even_when_self_consistent(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m")
    pinned = content.write_manifest(d)
    (d / "config.json").write_text('{"model_type": "other"}\n')
    content.write_manifest(d)  # a re-manifested, different model
    with pytest.raises(content.ContentMismatch, match=f"MANIFEST.sha256: content digest .* expected {pinned}"):
        content.verify(d, pinned)


def test_missing_manifest_and_symlinks_are_refused(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m")
    with pytest.raises(content.ContentMismatch, match=r"MANIFEST\.sha256 is missing"):
        content.verify(d)
    with pytest.raises(content.ContentMismatch, match=r"no readable MANIFEST\.sha256"):
        content.content_digest(d)
    (d / "link.json").symlink_to(d / "config.json")
    with pytest.raises(content.ContentMismatch, match=r"link\.json: symlinks"):
        content.write_manifest(d)
