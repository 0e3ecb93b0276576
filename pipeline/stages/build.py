"""`build`: the Python distribution, hadolint on the Dockerfile(s), images, the chart, and the release pins.

Images are built where an engine exists (pipeline.runtime.engine). In Dagger the module builds
and publishes them and passes the registry digests in (`--gateway-digest/--vllm-digest`).
Locally podman (or Docker where configured) builds gateway, simulator, pipeline and vllm-cpu
(the CUDA `vllm` image only where its base can be pulled; SKIPPED with the reason otherwise),
from a local Debian base where the pinned one cannot be pulled (recorded), and pushes every
image to the registry: the embedded one on 127.0.0.1 (started on demand, keeps serving; `python
-m pipeline registry stop`) or $PIPELINE_REGISTRY (credentials: $PIPELINE_REGISTRY_USERNAME and
the file $PIPELINE_REGISTRY_PASSWORD_FILE, never argv). Only a registry digest (from a push) is a
release pin (`imagesBuilt: true`); where the CUDA image is not built, the vllm-cpu image's digest
is the vllm pin and the evidence says so (`substitutions`). Without an engine the image steps are
SKIPPED with the reason and the pins are content digests of the build context (`imagesBuilt: false`).

The chart is a versioned artifact too (pipeline.artifacts.chart): `helm package` at the build's chart
version into <stage dir>/chart/, its sha256 pinned as `chart_digest`, and `helm push` to the
OCI chart repository: --chart-registry / $PIPELINE_CHART_REGISTRY, else `<image registry>/charts`
when images were pushed; without either the push is SKIPPED, never passed.

The model is an artifact too (pipeline.models.artifact): with an engine, the stand-in model
(trained from app/model.yaml's standIn recipe; the hub model cannot be downloaded here, a recorded
substitution) is packaged as a modelcar image FROM the same base, pushed as `<registry>/model`, and
pinned (`model_repository`, `model_digest`, `model_content_digest`); its build+push seconds are in
the evidence. Without an engine the artifact is SKIPPED with the reason and nothing is pinned.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.artifacts import chart as chart_artifact
from pipeline.artifacts import images as image_artifacts
from pipeline.artifacts.source import TARGETS, commit_time, context_digest, git_commit
from pipeline.core.cache import Extra, InputHasher
from pipeline.core.context import RunContext
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.core.shell import run_command
from pipeline.gitops.release import DIGEST_RE, Release
from pipeline.models.artifact import release_pins as model_release_pins
from pipeline.runtime import engine as engines
from pipeline.runtime import registry as registries
from pipeline.runtime.contract import TOOL_TARGETS
from pipeline.runtime.tools import find

log = logging.getLogger(__name__)

REGISTRY_ENV = "PIPELINE_REGISTRY"
NAME = "build"
HELP = "build the Python distribution, lint Dockerfiles (hadolint), build images if an engine exists; release pins"
# Also built from app/Dockerfile, not pinned per release: the pipeline image (rollback controller),
# pinned in environments/argocd/rollback-controller-values.yaml.
# (TOOL_TARGETS, from pipeline/runtime/contract.json, which the Dagger module reads too.)
# (policies/ and loadtests/ are copied into the pipeline image.)
CACHE_INPUTS = (
    *("app", "pipeline", "policies", "loadtests", "charts", "pyproject.toml", "uv.lock", "README.md"),
    ".dockerignore",  # shapes the image build context
)
CACHE_TOOLS = ("hadolint", "podman", "docker")
# Images built by default, in build order (pipeline.artifacts.images): `vllm` (CUDA) only where its
# base can be pulled; `vllm-cpu` stands in for its pin there (a recorded substitution).
DEFAULT_IMAGES = ("gateway", "simulator", "pipeline", "vllm", "vllm-cpu")


@dataclass
class BuildOptions:
    context: Path | None = None  # repository root (default: ctx.repo_root)
    gateway_digest: str | None = None  # set by the Dagger executor after publishing
    vllm_digest: str | None = None
    model_revision: str | None = None
    hadolint_threshold: str = "error"
    skip_dist: bool = False
    # Chart version to package (default: Chart.yaml's for a release tag, else <version>-g<sha7>).
    chart_version: str | None = None
    # OCI repository to push the chart to, without scheme (e.g. registry.example.com/llm/charts).
    chart_registry: str | None = field(default_factory=lambda: os.environ.get(chart_artifact.REGISTRY_ENV) or None)
    # Image registry HOST[:PORT][/PATH]; None = the embedded local registry (started on demand).
    registry: str | None = field(default_factory=lambda: os.environ.get(REGISTRY_ENV) or None)
    images: tuple[str, ...] = DEFAULT_IMAGES
    model_artifact: bool = True  # package + push the stand-in model as the release's model artifact


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway-digest", help="registry digest of the gateway image (set by the Dagger executor)")
    parser.add_argument("--vllm-digest", help="registry digest of the vLLM image (set by the Dagger executor)")
    parser.add_argument(
        "--registry",
        default=os.environ.get(REGISTRY_ENV) or None,
        help=f"image registry HOST[:PORT][/PATH] to push to (default: ${REGISTRY_ENV}, else the embedded local "
        f"registry); user ${REGISTRY_ENV}_USERNAME, password from the file ${REGISTRY_ENV}_PASSWORD_FILE, never argv",
    )
    parser.add_argument("--model-revision", help="model revision to pin (default: app/model.yaml)")
    parser.add_argument(
        "--hadolint-threshold",
        default="error",
        choices=["error", "warning", "info", "style"],
        help="hadolint findings at or above this level fail the stage (default: error)",
    )
    parser.add_argument("--skip-dist", action="store_true", help="do not build the Python sdist/wheel")
    parser.add_argument(
        "--no-model-artifact",
        dest="model_artifact",
        action="store_false",
        help="do not package the stand-in model as the release's model artifact (the release pins no artifact)",
    )
    parser.add_argument(
        "--chart-version",
        help="chart version to package (default: Chart.yaml's on a release tag v<version>, else <version>-g<sha7>)",
    )
    parser.add_argument(
        "--chart-registry",
        default=os.environ.get(chart_artifact.REGISTRY_ENV) or None,
        help=f"OCI repository to push the chart to, no scheme (default: ${chart_artifact.REGISTRY_ENV}; "
        "unset = <image registry>/charts when images are pushed, else package only)",
    )


def cache_extra(opts: BuildOptions | argparse.Namespace, root: Path) -> Extra:
    """The engine decides between a skipped and a real image build; the registry must still hold the pushes."""
    status = detect_engine()
    serving = registries.status() is not None if status.up and not getattr(opts, "registry", None) else None
    return Extra(facts={"engine": status.engine.kind if status.engine else "none", "registry_serving": serving})


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    return run(
        BuildOptions(
            gateway_digest=args.gateway_digest,
            vllm_digest=args.vllm_digest,
            model_revision=args.model_revision,
            hadolint_threshold=args.hadolint_threshold,
            skip_dist=args.skip_dist,
            chart_version=args.chart_version,
            chart_registry=args.chart_registry,
            registry=args.registry,
            model_artifact=getattr(args, "model_artifact", True),
        ),
        ctx,
    )


def detect_engine() -> engines.EngineStatus:
    """The OCI engine (pipeline.runtime.engine); tests replace this to inject one or none."""
    return engines.current()


def _project_version(root: Path) -> str:
    import tomllib

    try:
        return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "0.0.0"


MODEL_FILE = "app/model.yaml"
HF_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def model_revision(root: Path) -> str:
    """The model revision this commit ships (app/model.yaml); a commit hash, never a floating ref."""
    from ruamel.yaml import YAML

    path = root / MODEL_FILE
    try:
        data = YAML(typ="safe").load(path.read_text()) or {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{MODEL_FILE}: cannot read the model pin: {exc}") from exc
    revision = str(data.get("revision") or "") if isinstance(data, dict) else ""
    if not HF_COMMIT_RE.match(revision):
        raise ValueError(f"{MODEL_FILE}: revision must be a 40-hex model commit, got {revision!r}")
    return revision


def _chart_info(root: Path) -> tuple[str, str | None]:
    """(chart version, vllm.model.revision from its values) of the LLM service chart."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    charts = sorted(p.parent for p in (root / "charts").glob("*/Chart.yaml"))
    # The service chart, not the rollback controller's.
    charts.sort(key=lambda c: (("llm" not in c.name and "service" not in c.name), c.name))
    for chart in charts:
        try:
            meta = yaml.load((chart / "Chart.yaml").read_text()) or {}
            values = yaml.load((chart / "values.yaml").read_text()) if (chart / "values.yaml").is_file() else {}
        except Exception as exc:  # a broken chart is render's finding, not build's
            log.debug("cannot read chart %s: %s", chart, exc)
            continue
        revision = (((values or {}).get("vllm") or {}).get("model") or {}).get("revision")
        return str(meta.get("version", "0.0.0")), (str(revision) if revision else None)
    return "0.0.0", None


def dockerfiles(root: Path) -> list[Path]:
    app = root / "app"
    return sorted(
        p for p in app.rglob("*") if p.is_file() and (p.name == "Dockerfile" or p.name.endswith(".Dockerfile"))
    )


def _hadolint(root: Path, files: list[Path], threshold: str, log_dir: Path) -> list[Check]:
    if not files:
        return [Check(name="hadolint", status=Status.SKIPPED, detail="no Dockerfile under app/ yet")]
    hadolint = find("hadolint")
    if hadolint is None:
        return [Check(name="hadolint", status=Status.FAILED, detail="hadolint not installed (`make venv`)")]
    checks = []
    for f in files:
        rel = f.relative_to(root)
        argv = [hadolint, "-f", "json", "--failure-threshold", threshold, str(rel)]
        check, output = run_command(f"hadolint {rel}", argv, cwd=root, log_dir=log_dir)
        try:
            findings = json.loads(output.strip().splitlines()[0]) if output.strip() else []
        except (ValueError, IndexError):
            findings = []
        levels: dict[str, float] = {}
        for item in findings:
            levels[item.get("level", "?")] = levels.get(item.get("level", "?"), 0) + 1
        check.numbers = levels
        if check.status is Status.FAILED and findings:
            check.detail = "; ".join(
                f"{rel}:{i.get('line')} {i.get('code')} {i.get('level')}: {i.get('message')}" for i in findings[:10]
            )
        elif findings:
            check.detail = f"{len(findings)} finding(s) below the '{threshold}' threshold"
        checks.append(check)
    return checks


def _build_images(
    root: Path,
    opts: BuildOptions,
    engine: engines.Engine,
    checks: list[Check],
    evidence: dict[str, object],
    out: Path,
    ctx: RunContext,
) -> image_artifacts.ImageSet:
    """Build and push the images with the local engine (pipeline.artifacts.images); record what was used."""
    unknown = [n for n in opts.images if n not in image_artifacts.IMAGES]
    if unknown:
        checks.append(Check(name="images", status=Status.FAILED, detail=f"unknown image(s) {', '.join(unknown)}"))
        return image_artifacts.ImageSet()
    try:
        registry = registries.external(opts.registry) if opts.registry else registries.ensure()
        checks.append(
            Check(
                name="registry",
                status=Status.PASSED,
                detail=f"{registry.host}"
                + (" (embedded, keeps serving; `pipeline registry stop`)" if not opts.registry else ""),
            )
        )
        evidence["registry"] = registry.host
        evidence["registry_local"] = registry.local
    except (registries.RegistryError, OSError) as exc:
        checks.append(Check(name="registry", status=Status.FAILED, detail=str(exc)))
        registry = None
    if registry is not None and not registry.local and os.environ.get(registries.PASSWORD_FILE_ENV):
        login = engine.run(
            [
                "login",
                "--username",
                os.environ.get(registries.USERNAME_ENV, ""),
                "--password-stdin",
                registry.host.split("/")[0],
            ],
            input=registries.password() or "",
        )
        if login.returncode != 0:
            checks.append(Check(name="registry login", status=Status.FAILED, detail=login.stderr.strip()[-500:]))
            registry = None
    commit, dirty = git_commit(root)
    created = commit_time(root)
    labels = {"VERSION": _project_version(root), "REVISION": commit, "CREATED": created}
    tag = image_artifacts.build_tag(_project_version(root), commit, dirty)
    image_set = image_artifacts.build_all(
        engine,
        root,
        opts.images,
        registry,
        tag,
        labels,
        out,
        engines.project_cache() / "wheelhouse" / "vllm-cpu",
        ctx.progress,
    )
    checks.extend(image_set.checks)
    evidence["engine"] = engine.detail
    evidence["base_images"] = image_set.bases
    evidence["images"] = {
        n: {"local": b.local_ref, "image_id": b.image_id, "ref": b.ref, "digest": b.digest}
        for n, b in image_set.built.items()
    }
    if opts.model_artifact:
        _model_artifact(root, engine, registry, tag, image_set, checks, evidence, out, ctx)
    else:
        checks.append(Check(name="model artifact", status=Status.SKIPPED, detail="--no-model-artifact"))
    return image_set


def _model_artifact(
    root: Path,
    engine: engines.Engine,
    registry: registries.Registry | None,
    tag: str,
    image_set: image_artifacts.ImageSet,
    checks: list[Check],
    evidence: dict[str, object],
    out: Path,
    ctx: RunContext,
) -> None:
    """The stand-in model as the release's model artifact, FROM the base the images used."""
    from pipeline.models import artifact

    base = str((image_set.bases.get(image_artifacts.PYTHON_BASE_ARG) or {}).get("name") or "")
    published = artifact.publish_standin(
        root, engine, registry, tag, base=base or None, work=out / "model", progress=ctx.progress
    )
    checks.extend(published.checks)
    evidence["model_artifact"] = published.evidence
    if published.artifact is not None and published.artifact.ref:
        image_set.substitutions.append(str(published.evidence["substitution"]))


def _chart_artifact(
    root: Path,
    opts: BuildOptions,
    commit: str,
    dirty: bool,
    release_id: str,
    out: Path,
    checks: list[Check],
    evidence: dict[str, object],
    ctx: RunContext,
) -> tuple[str | None, str | None]:
    """Package (and with a registry, push) the service chart: (chart version, .tgz digest)."""
    chart_dir = root / chart_artifact.CHART_DIR
    base = chart_artifact.tree_version(root)
    if base is None:
        why = f"no {chart_artifact.CHART_DIR}/Chart.yaml"
        checks += [Check(name=n, status=Status.SKIPPED, detail=why) for n in ("chart package", "chart push")]
        return None, None
    if opts.chart_version:
        version = opts.chart_version
    else:
        content = InputHasher().tree_digest(root, (str(chart_artifact.CHART_DIR),))[0] if dirty else ""
        release = chart_artifact.is_release_commit(root, base)
        version = chart_artifact.build_version(base, commit, dirty, release=release, content=content)
    if not chart_artifact.SEMVER_RE.match(version):
        checks.append(
            Check(
                name="chart package",
                status=Status.FAILED,
                detail=f"chart version {version!r} is not an exact SemVer without build metadata (OCI tags cannot hold '+')",
            )
        )
        return version, None
    helm = find("helm")
    if helm is None:
        checks.append(Check(name="chart package", status=Status.FAILED, detail="helm not installed (`make tools`)"))
        return version, None
    ctx.progress(f"build: helm package {chart_artifact.CHART_DIR} --version {version}")
    check, packaged = chart_artifact.package(helm, chart_dir, version, release_id, out / "chart", out)
    checks.append(check)
    if packaged is None:
        return version, None
    (out / "chart" / "SHA256SUMS").write_text(f"{packaged.digest.removeprefix('sha256:')}  {packaged.path.name}\n")
    plain_http = bool(evidence.get("registry_local")) and str(opts.chart_registry or "").startswith(
        str(evidence.get("registry"))
    )
    push_check, oci_digest = chart_artifact.push(helm, packaged.path, opts.chart_registry, out, plain_http=plain_http)
    checks.append(push_check)
    evidence["chart"] = {
        "name": chart_artifact.CHART_NAME,
        "version": version,
        "digest": packaged.digest,
        "package": str(packaged.path),
        "registry": opts.chart_registry,
        "pushed": push_check.status is Status.PASSED,
        "manifest_digest": oci_digest,
    }
    return version, packaged.digest


def run(opts: BuildOptions, ctx: RunContext) -> StageResult:
    root = (opts.context or ctx.repo_root).resolve()
    out = ctx.stage_dir(NAME)
    checks: list[Check] = []
    artifacts: list[str] = []
    evidence: dict[str, object] = {}
    with Timer() as total:
        # Python distribution.
        if opts.skip_dist:
            checks.append(Check(name="dist", status=Status.SKIPPED, detail="skipped by --skip-dist"))
        else:
            ctx.progress("build: python -m build (sdist + wheel)")
            dist = out / "dist"
            check, _ = run_command(
                "dist", [sys.executable, "-m", "build", "--outdir", str(dist), "."], cwd=root, log_dir=out
            )
            if check.status is Status.PASSED:
                sums = {}
                for f in sorted(dist.iterdir()):
                    sums[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
                    artifacts.append(str(f))
                (dist / "SHA256SUMS").write_text("".join(f"{v}  {k}\n" for k, v in sums.items()))
                evidence["dist_sha256"] = sums
                check.detail = ", ".join(sums)
            checks.append(check)

        # Dockerfile lint.
        files = dockerfiles(root)
        ctx.progress(f"build: hadolint on {len(files)} Dockerfile(s)")
        checks.extend(_hadolint(root, files, opts.hadolint_threshold, out))

        # Images.
        digests: dict[str, str] = {}
        given = {"gateway": opts.gateway_digest, "vllm": opts.vllm_digest}
        images_built = False  # only with registry digests (a push); a local build never pushes
        tool_images: dict[str, str] = {}
        local_ids: dict[str, str] = {}
        repositories: dict[str, str] = {}  # pinned target → the registry repository its digest is in
        if all(given.values()):
            for target in TOOL_TARGETS:
                checks.append(
                    Check(name=f"image {target}", status=Status.SKIPPED, detail="built and published by the executor")
                )
            for target, digest in given.items():
                assert digest is not None
                if not DIGEST_RE.match(digest):
                    checks.append(Check(name=f"image {target}", status=Status.FAILED, detail=f"bad digest {digest!r}"))
                else:
                    digests[target] = digest
                    checks.append(Check(name=f"image {target}", status=Status.PASSED, detail=f"published {digest}"))
            images_built = len(digests) == len(TARGETS)
            why = "the executor publishes images; the model artifact is packaged by the local executor only"
            checks.append(Check(name="model artifact", status=Status.SKIPPED, detail=why))
            if images_built and opts.registry:
                repositories = {t: f"{opts.registry}/{image_artifacts.IMAGES[t].repository}" for t in TARGETS}
        else:
            status = detect_engine()
            if not files:
                for target in (*TARGETS, *TOOL_TARGETS):
                    checks.append(
                        Check(name=f"image {target}", status=Status.SKIPPED, detail="no app/Dockerfile to build")
                    )
                checks.append(Check(name="model artifact", status=Status.SKIPPED, detail="no app/Dockerfile: no base"))
            elif status.engine is None or status.engine.kind == "dagger":
                why = status.reason if status.engine is None else "Dagger session: the module builds and publishes"
                for target in (*TARGETS, *TOOL_TARGETS):
                    checks.append(Check(name=f"image {target}", status=Status.SKIPPED, detail=why))
                checks.append(Check(name="model artifact", status=Status.SKIPPED, detail=why))
            else:
                image_set = _build_images(root, opts, status.engine, checks, evidence, out, ctx)
                digests = {n: b.digest for n, b in image_set.built.items() if b.digest}
                local_ids = {n: b.image_id for n, b in image_set.built.items() if b.image_id}
                tool_images = {n: b.ref for n, b in image_set.built.items() if b.ref and n not in TARGETS}
                repositories = {n: b.ref.split("@", 1)[0] for n, b in image_set.built.items() if b.ref}
                if "vllm" not in digests and "vllm-cpu" in digests:
                    digests["vllm"] = digests["vllm-cpu"]
                    if "vllm-cpu" in repositories:
                        repositories["vllm"] = repositories["vllm-cpu"]
                    image_set.substitutions.append(
                        "release pin vllm: the vllm-cpu image (same stage, CPU base); the CUDA image was not built here"
                    )
                evidence["substitutions"] = image_set.substitutions
                images_built = all(t in digests for t in TARGETS)
                if not images_built:
                    digests = {}

        # Release pins.
        commit, dirty = git_commit(root)
        tree_chart_version, chart_revision = _chart_info(root)
        try:
            model_pin = opts.model_revision or chart_revision or model_revision(root)
            checks.append(Check(name="model pin", status=Status.PASSED, detail=model_pin))
        except ValueError as exc:
            # No release without a pinned model: the remaining pins would promote an unknown model.
            checks.append(Check(name="model pin", status=Status.FAILED, detail=str(exc)))
            return StageResult.from_checks(NAME, checks, summary=str(exc), evidence=evidence, artifacts=artifacts)
        if not images_built:
            digests = {t: context_digest(root, t) for t in TARGETS}
        elif "registry" in evidence and not opts.chart_registry:
            opts.chart_registry = f"{evidence['registry']}/charts"
        release_id = f"{_project_version(root)}+g{commit[:7]}{'.dirty' if dirty else ''}"
        chart_version, chart_digest = _chart_artifact(root, opts, commit, dirty, release_id, out, checks, evidence, ctx)
        release = Release(
            **model_release_pins(evidence.get("model_artifact")),
            id=release_id,
            commit=commit,
            chart_version=chart_version or tree_chart_version,
            chart_digest=chart_digest,
            gateway_digest=digests["gateway"],
            vllm_digest=digests["vllm"],
            model_revision=model_pin,
            images_built=images_built,
            registry=(opts.registry or str(evidence.get("registry") or "") or None) if images_built else None,
            gateway_repository=repositories.get("gateway") if images_built else None,
            vllm_repository=repositories.get("vllm") if images_built else None,
        )
        release_path = out / "release.json"
        release_path.write_text(release.model_dump_json(indent=2) + "\n")
        artifacts.append(str(release_path))
        evidence["release"] = release.model_dump(mode="json")
        evidence["dirty_tree"] = dirty
        # Not release pins: the pipeline image is pinned by environments/argocd/rollback-controller-values.yaml.
        evidence["tool_images"] = tool_images
        if local_ids:
            evidence["local_image_ids"] = local_ids
        if not images_built:
            evidence["digests_are"] = "content digests of the build context (no image was built)"
    result = StageResult.from_checks(
        NAME, checks, seconds=total.seconds, logs=str(out), artifacts=artifacts, evidence=evidence
    )
    failed = [c.name for c in result.failures()]
    result.summary = (
        f"failed: {', '.join(failed)}"
        if failed
        else f"release {release.id}; images "
        + (
            "published (registry digests)"
            if images_built
            else "built, but the pins are content digests (not every release target reached a registry)"
            if local_ids
            else "NOT built (content digests)"
        )
    )
    return result
