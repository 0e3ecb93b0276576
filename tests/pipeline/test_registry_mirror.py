"""`registry mirror`: a release's images and model artifact copied to a second registry by digest, and back.

The plan (paths, digests, TLS, refusals) runs without any registry; the slow test copies real OCI
artifacts between two real registries (Debian's docker-registry, pipeline.runtime.registry) with
skopeo, pulls from the mirror by the pinned digest with the primary stopped, and restores an
emptied primary from the mirror.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from pipeline import cli
from pipeline.gitops import release_mirror as rm
from pipeline.gitops.release import Release
from pipeline.gitops.repo import ensure_local_remote
from pipeline.runtime import registry, skopeo
from pipeline.runtime.tools import find


def digest_of(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def make_release(registry_: str | None = "127.0.0.1:5000/llm", **kw: Any) -> Release:
    """A built release pinning all three artifacts below `registry_` (kw overrides any field)."""
    base = registry_ or "127.0.0.1:5000"
    fields: dict[str, Any] = {
        "id": "0.3.0+g1234567",
        "commit": "1" * 40,
        "chart_version": "0.3.0",
        "gateway_digest": digest_of("gw"),
        "vllm_digest": digest_of("vllm"),
        "model_revision": "r1",
        "registry": registry_,
        "gateway_repository": f"{base}/gateway",
        "vllm_repository": f"{base}/vllm-cpu",
        "model_repository": f"{base}/model",
        "model_digest": digest_of("model"),
        "model_content_digest": digest_of("content"),
    }
    return Release(**{**fields, **kw})


# -- the plan ----------------------------------------------------------------------------------


def test_mirror_swaps_only_the_registry_and_keeps_every_digest() -> None:
    rel = make_release()
    transfers = rm.plan(rel, "backup.example.com/dr", "mirror")
    assert [(t.artifact, t.source, t.destination, t.digest) for t in transfers] == [
        ("gateway", "127.0.0.1:5000/llm/gateway", "backup.example.com/dr/gateway", rel.gateway_digest),
        ("vllm", "127.0.0.1:5000/llm/vllm-cpu", "backup.example.com/dr/vllm-cpu", rel.vllm_digest),
        ("model", "127.0.0.1:5000/llm/model", "backup.example.com/dr/model", rel.model_digest),
    ]
    # The loopback primary is plain HTTP; a registry elsewhere is TLS-verified unless told otherwise.
    assert {(t.src_tls_verify, t.dest_tls_verify) for t in transfers} == {(False, True)}
    insecure = rm.plan(rel, "backup.example.com/dr", "mirror", tls_verify=False)
    assert {t.dest_tls_verify for t in insecure} == {False}


def test_restore_copies_the_same_digests_back_into_the_pinned_repositories() -> None:
    rel = make_release()
    mirror, restore = rm.plan(rel, "backup.example.com/dr", "mirror"), rm.plan(rel, "backup.example.com/dr", "restore")
    assert [(t.source, t.destination, t.digest) for t in restore] == [
        (t.destination, t.source, t.digest) for t in mirror
    ]
    assert {(t.src_tls_verify, t.dest_tls_verify) for t in restore} == {(True, False)}


def test_without_a_release_registry_the_path_below_the_host_is_kept() -> None:
    rel = make_release(registry_=None)
    assert [t.destination for t in rm.plan(rel, "127.0.0.1:6000", "mirror")] == [
        "127.0.0.1:6000/gateway",
        "127.0.0.1:6000/vllm-cpu",
        "127.0.0.1:6000/model",
    ]


@pytest.mark.parametrize("bad", ["Backup.example.com", "backup example.com", "http://backup.example.com", "", "/x"])
@pytest.mark.parametrize("field", ["--to", "--from"])
def test_a_bad_registry_name_is_refused_naming_the_option(bad: str, field: str) -> None:
    with pytest.raises(rm.MirrorPlanError, match=rf"^{field}: not a registry \(host\[:port\]\[/path\], lower case\)"):
        rm.plan(make_release(), bad, "mirror" if field == "--to" else "restore", field=field)


def test_oci_scheme_and_trailing_slash_are_accepted() -> None:
    assert rm.check_registry("oci://backup.example.com/dr/", "--to") == "backup.example.com/dr"


def test_the_releases_own_registry_is_not_a_mirror() -> None:
    with pytest.raises(rm.MirrorPlanError, match=r"--to: 127\.0\.0\.1:5000/llm is the release's own registry"):
        rm.plan(make_release(), "127.0.0.1:5000/llm", "mirror")


def test_a_release_without_a_model_artifact_names_the_missing_model_pins() -> None:
    rel = make_release(model_repository=None, model_digest=None, model_content_digest=None)
    with pytest.raises(rm.MirrorPlanError) as exc:
        rm.plan(rel, "backup.example.com", "mirror")
    msg = str(exc.value)
    assert "vllm.model.artifact.repository" in msg and "vllm.model.artifact.digest" in msg
    assert "gateway" not in msg and "vllm.image" not in msg


def test_a_missing_image_repository_is_named() -> None:
    with pytest.raises(rm.MirrorPlanError, match=r"does not pin gateway\.image\.repository: "):
        rm.plan(make_release(gateway_repository=None), "backup.example.com", "mirror")


def test_an_unbuilt_release_has_nothing_in_a_registry() -> None:
    with pytest.raises(rm.MirrorPlanError, match="imagesBuilt: false"):
        rm.plan(make_release(images_built=False), "backup.example.com", "mirror")


# -- the command line ---------------------------------------------------------------------------


def seeded_remote(tmp_path: Path, releases: dict[str, Release | None]) -> str:
    """A GitOps remote whose envs pin `releases` (None: the seed placeholder, nothing promoted)."""
    src = tmp_path / "src"
    yaml = YAML()
    for env in ("dev", "staging", "prod"):
        d = src / "environments" / env
        d.mkdir(parents=True)
        rel = releases.get(env)
        values = rel.to_values() if rel else {"release": {"id": "", "commit": "", "chartVersion": "0.1.0"}}
        with (d / "release.yaml").open("w") as fh:
            yaml.dump(values, fh)
    return str(ensure_local_remote(tmp_path / "remote" / "gitops.git", src))


def run_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """`python -m pipeline registry ...` in-process: (exit code, the -o json document or None, stderr)."""
    code = cli.main(["--run-dir", str(tmp_path / "run"), "-o", "json", "registry", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mirror", "--env", "dev", "--to", "Backup.Example.com"], "--to: not a registry"),
        (["mirror", "--env", "dev", "--from", "back up"], "--from: not a registry"),
        (["mirror", "--to", "backup.example.com"], "registry mirror needs --env ENV"),
        (["mirror", "--env", "dev"], "needs --to REGISTRY (backup) or --from REGISTRY (restore)"),
        (["status", "--to", "backup.example.com"], "--to only go with `registry mirror`"),
    ],
)
def test_bad_options_exit_2_with_the_reason_and_nothing_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, doc, err = run_cli(tmp_path, capsys, *argv)
    assert (code, doc) == (2, None)
    assert message in err


def test_an_unknown_env_is_refused_by_the_parser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli(tmp_path, capsys, "mirror", "--env", "qa", "--to", "backup.example.com")
    assert exc.value.code == 2
    assert "argument --env: invalid choice: 'qa'" in capsys.readouterr().err


def test_to_and_from_together_are_refused_by_the_parser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_cli(tmp_path, capsys, "mirror", "--env", "dev", "--to", "a.example.com", "--from", "b.example.com")
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_an_env_without_a_release_or_its_pins_is_refused_naming_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = make_release(model_repository=None, model_digest=None, model_content_digest=None)
    remote = seeded_remote(tmp_path, {"staging": old})
    code, doc, _ = run_cli(tmp_path, capsys, "mirror", "--env", "dev", "--to", "b.example.com", "--gitops-repo", remote)
    assert code == 1 and doc["error"] == "dev pins no release: nothing to copy" and doc["artifacts"] == []
    code, doc, _ = run_cli(
        tmp_path, capsys, "mirror", "--env", "staging", "--to", "b.example.com", "--gitops-repo", remote
    )
    assert code == 1 and doc["release"] == old.id
    assert "vllm.model.artifact.repository, vllm.model.artifact.digest" in doc["error"]


# -- real registries ------------------------------------------------------------------------------


def oci_layout(path: Path, files: dict[str, bytes]) -> str:
    """An OCI image layout at `path` with one layer holding `files`; returns its manifest digest."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return "sha256:" + hexd, len(data)

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    layer, layer_size = put(gzip.compress(tar.getvalue(), mtime=0))
    rootfs = {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar.getvalue()).hexdigest()]}
    config, config_size = put(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": rootfs}).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
    }
    digest, size = put(json.dumps(manifest).encode())
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size}
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [index]}))
    return digest


def push(layout: Path, ref: str) -> str:
    """skopeo copy of an OCI layout to a loopback registry; the digest the registry stored."""
    digest_file = layout.with_suffix(".digest")
    argv = [skopeo.BINARY, "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digest_file)]
    subprocess.run([*argv, f"oci:{layout}", f"docker://{ref}"], check=True, timeout=120)
    return digest_file.read_text().strip()


def pull_files(ref: str, out: Path) -> dict[str, bytes]:
    """Pull `ref` (repository@digest) from a loopback registry into an OCI layout; the files of its layer."""
    subprocess.run(
        [skopeo.BINARY, "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}:pulled"],
        check=True,
        timeout=120,
    )
    blob = out / "blobs" / "sha256"
    (entry,) = json.loads((out / "index.json").read_text())["manifests"]
    assert entry["digest"] == ref.split("@", 1)[1]  # the manifest pulled is the pinned one, bytes unchanged
    manifest = json.loads((blob / entry["digest"].split(":", 1)[1]).read_bytes())
    (layer,) = manifest["layers"]
    with tarfile.open(fileobj=io.BytesIO((blob / layer["digest"].split(":", 1)[1]).read_bytes())) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


MODEL_FILES = {
    "model/config.json": b'{"model_type": "llama", "hidden_size": 128}\n',
    "model/tokenizer.json": b'{"version": "1.0"}\n',
}
MODEL_FILES["model/MANIFEST.sha256"] = "".join(
    f"{hashlib.sha256(data).hexdigest()}  {name.removeprefix('model/')}\n" for name, data in sorted(MODEL_FILES.items())
).encode()


@pytest.mark.slow
def test_mirror_pull_from_the_mirror_with_the_primary_down_and_restore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if find(skopeo.BINARY) is None or find(registry.BINARY) is None:
        pytest.fail(
            "skopeo and docker-registry are needed: python -m pipeline.runtime.tools ensure skopeo docker-registry"
        )
    sdirs = {name: tmp_path / f"registry-{name}" for name in ("primary", "mirror")}
    try:
        primary, mirror = (registry.ensure(sdirs[n]) for n in ("primary", "mirror"))
        # The release: two images and the model artifact, pushed to the primary as the build stage pushes them.
        contents = {
            "gateway": {"app/gateway.txt": b"gateway build\n"},
            "vllm-cpu": {"app/vllm.txt": b"vllm cpu build\n"},
            "model": MODEL_FILES,
        }
        pushed = {}
        for name, files in contents.items():
            layout_digest = oci_layout(tmp_path / "layouts" / name, files)
            pushed[name] = push(tmp_path / "layouts" / name, f"{primary.host}/llm/{name}:0.3.0")
            assert pushed[name] == layout_digest
        content_digest = "sha256:" + hashlib.sha256(MODEL_FILES["model/MANIFEST.sha256"]).hexdigest()
        rel = make_release(
            registry_=f"{primary.host}/llm",
            gateway_digest=pushed["gateway"],
            vllm_digest=pushed["vllm-cpu"],
            model_digest=pushed["model"],
            model_content_digest=content_digest,
        )
        remote = seeded_remote(tmp_path, {"prod": rel})

        # Back up: every artifact in the mirror under the same path and digest, verified.
        code, doc, err = run_cli(
            tmp_path, capsys, "mirror", "--env", "prod", "--to", f"{mirror.host}/llm", "--gitops-repo", remote
        )
        assert code == 0, (doc, err)
        assert doc["release"] == rel.id and doc["error"] is None
        assert [(a["artifact"], a["source"], a["destination"], a["verified"]) for a in doc["artifacts"]] == [
            (a, f"{primary.host}/llm/{n}@{pushed[n]}", f"{mirror.host}/llm/{n}@{pushed[n]}", True)
            for a, n in (("gateway", "gateway"), ("vllm", "vllm-cpu"), ("model", "model"))
        ]
        with capsys.disabled():  # the number the report quotes, outside the captured CLI output
            print(f"\nmirror seconds: {doc['seconds']} (per artifact {[a['seconds'] for a in doc['artifacts']]})")

        # The primary is gone: the pins, with only the registry rewritten, still pull from the mirror.
        registry.stop(sdirs["primary"])
        for name, digest in pushed.items():
            assert skopeo.manifest_digest(f"{mirror.host}/llm/{name}", digest, tls_verify=False) == digest
        model = pull_files(f"{mirror.host}/llm/model@{rel.model_digest}", tmp_path / "pulled-mirror")
        assert model == MODEL_FILES
        assert "sha256:" + hashlib.sha256(model["model/MANIFEST.sha256"]).hexdigest() == rel.model_content_digest

        # Mirroring from a primary that is down fails on the first artifact, says which, and claims nothing.
        code, doc, err = run_cli(
            tmp_path, capsys, "mirror", "--env", "prod", "--to", f"{mirror.host}/llm", "--gitops-repo", remote
        )
        assert code == 3 and doc["artifacts"] == [] and doc["error"].startswith("gateway: copy ")

        # Restore: a primary that lost its data, on its old address, gets every pinned digest back.
        shutil.rmtree(sdirs["primary"] / "data")
        assert registry.ensure(sdirs["primary"]).host == primary.host
        with pytest.raises(skopeo.SkopeoError, match="manifest unknown"):
            skopeo.manifest_digest(f"{primary.host}/llm/model", pushed["model"], tls_verify=False)
        code, doc, err = run_cli(
            tmp_path, capsys, "mirror", "--env", "prod", "--from", f"{mirror.host}/llm", "--gitops-repo", remote
        )
        assert code == 0, (doc, err)
        assert [a["destination"] for a in doc["artifacts"]] == [
            f"{primary.host}/llm/{n}@{pushed[n]}" for n in ("gateway", "vllm-cpu", "model")
        ]
        assert pull_files(f"{rel.model_repository}@{rel.model_digest}", tmp_path / "pulled-primary") == MODEL_FILES
    finally:
        for sdir in sdirs.values():
            registry.stop(sdir)
