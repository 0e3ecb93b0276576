"""`build`: the Python distribution, hadolint on the Dockerfile(s), images, and the release pins.

Images are built where an engine exists: in Dagger the module builds and publishes them
and passes the registry digests in (`--gateway-digest/--vllm-digest`); locally with a
reachable Docker engine, `docker build`. With no engine the image build is SKIPPED with
the reason, and the release pins carry content digests of the build context marked
`images_built=False` so promotion evidence can never pass them off as registry images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.cache import InputHasher
from pipeline.checks import run_command
from pipeline.context import RunContext
from pipeline.release import DIGEST_RE, Release
from pipeline.result import Check, StageResult, Status, Timer
from pipeline.tools import find

log = logging.getLogger(__name__)

NAME = "build"
HELP = "build the Python distribution, lint Dockerfiles (hadolint), build images if an engine exists; release pins"
# Release images: their digests are the release pins.
TARGETS = ("gateway", "vllm")
# Also built from app/Dockerfile, not pinned per release: the pipeline image (rollback controller),
# pinned in environments/argocd/rollback-controller-values.yaml.
TOOL_TARGETS = ("pipeline",)
# (policies/ and loadtests/ are copied into the pipeline image.)
CACHE_INPUTS = ("app", "pipeline", "policies", "loadtests", "charts", "pyproject.toml", "uv.lock", "README.md")
CACHE_TOOLS = ("hadolint", "docker")
# Files that make up an image's build context (besides the target name).
CONTEXT_INPUTS = ("app", "pyproject.toml", "uv.lock")


@dataclass
class BuildOptions:
    context: Path | None = None  # repository root (default: ctx.repo_root)
    gateway_digest: str | None = None  # set by the Dagger executor after publishing
    vllm_digest: str | None = None
    model_revision: str | None = None
    hadolint_threshold: str = "error"
    skip_dist: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway-digest", help="registry digest of the gateway image (set by the Dagger executor)")
    parser.add_argument("--vllm-digest", help="registry digest of the vLLM image (set by the Dagger executor)")
    parser.add_argument("--model-revision", help="model revision to pin (default: the chart's vllm.model.revision)")
    parser.add_argument(
        "--hadolint-threshold",
        default="error",
        choices=["error", "warning", "info", "style"],
        help="hadolint findings at or above this level fail the stage (default: error)",
    )
    parser.add_argument("--skip-dist", action="store_true", help="do not build the Python sdist/wheel")


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    return run(
        BuildOptions(
            gateway_digest=args.gateway_digest,
            vllm_digest=args.vllm_digest,
            model_revision=args.model_revision,
            hadolint_threshold=args.hadolint_threshold,
            skip_dist=args.skip_dist,
        ),
        ctx,
    )


def engine_status() -> tuple[bool, str]:
    """Is a container engine reachable? A docker CLI alone is not an engine."""
    if os.environ.get("DAGGER_SESSION_PORT"):
        return True, "Dagger session"
    candidates: list[str] = []
    for var in ("DOCKER_HOST", "BUILDKIT_HOST"):
        if os.environ.get(var):
            candidates.append(os.environ[var])
    candidates += ["unix:///var/run/docker.sock"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(f"unix://{os.environ['XDG_RUNTIME_DIR']}/docker.sock")
    tried = []
    for url in candidates:
        tried.append(url)
        try:
            if url.startswith("unix://"):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(1.0)
                    s.connect(url.removeprefix("unix://"))
                return True, url
            m = re.match(r"^(?:tcp|http)://([^:/]+):(\d+)", url)
            if m:
                with socket.create_connection((m.group(1), int(m.group(2))), timeout=1.0):
                    return True, url
        except OSError:
            continue
    return False, f"no container engine reachable (tried {', '.join(tried)}; no Dagger session)"


def git_commit(root: Path) -> tuple[str, bool]:
    """(HEAD commit, dirty?) — ("unknown", True) outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return head, dirty


def _project_version(root: Path) -> str:
    import tomllib

    try:
        return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])
    except (OSError, KeyError, ValueError):
        return "0.0.0"


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


def context_digest(root: Path, target: str) -> str:
    """Content digest of an image's build context: stands in for a registry digest when no engine exists."""
    tree, _ = InputHasher().tree_digest(root, CONTEXT_INPUTS)
    return "sha256:" + hashlib.sha256(f"{target}\0{tree}".encode()).hexdigest()


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


def _docker_build(root: Path, target: str, tag: str, log_dir: Path) -> tuple[Check, str | None]:
    docker = shutil.which("docker")
    if docker is None:
        return Check(name=f"image {target}", status=Status.SKIPPED, detail="engine reachable but no docker CLI"), None
    argv = [docker, "build", "--target", target, "-t", tag, "-f", "app/Dockerfile", "."]
    check, _ = run_command(f"image {target}", argv, cwd=root, log_dir=log_dir)
    if check.status is not Status.PASSED:
        return check, None
    image_id = subprocess.run(
        [docker, "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True, check=False
    ).stdout.strip()
    return check, image_id if DIGEST_RE.match(image_id) else None


def run(opts: BuildOptions, ctx: RunContext) -> StageResult:
    root = (opts.context or ctx.repo_root).resolve()
    out = ctx.run_dir / NAME
    out.mkdir(parents=True, exist_ok=True)
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
        images_built = False
        tool_images: dict[str, str] = {}
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
        else:
            up, why = engine_status()
            if not files:
                for target in (*TARGETS, *TOOL_TARGETS):
                    checks.append(
                        Check(name=f"image {target}", status=Status.SKIPPED, detail="no app/Dockerfile to build")
                    )
            elif not up:
                for target in (*TARGETS, *TOOL_TARGETS):
                    checks.append(Check(name=f"image {target}", status=Status.SKIPPED, detail=why))
            else:
                for target in (*TARGETS, *TOOL_TARGETS):
                    ctx.progress(f"build: image {target} ({why})")
                    check, image_id = _docker_build(root, target, f"llm-{target}:pipeline", out)
                    checks.append(check)
                    if image_id:
                        (tool_images if target in TOOL_TARGETS else digests)[target] = image_id
                images_built = len(digests) == len(TARGETS)

        # Release pins.
        commit, dirty = git_commit(root)
        chart_version, chart_revision = _chart_info(root)
        if not images_built:
            digests = {t: context_digest(root, t) for t in TARGETS}
        release = Release(
            id=f"{_project_version(root)}+g{commit[:7]}{'.dirty' if dirty else ''}",
            commit=commit,
            chart_version=chart_version,
            gateway_digest=digests["gateway"],
            vllm_digest=digests["vllm"],
            model_revision=opts.model_revision or chart_revision or "unpinned",
            images_built=images_built,
        )
        release_path = out / "release.json"
        release_path.write_text(release.model_dump_json(indent=2) + "\n")
        artifacts.append(str(release_path))
        evidence["release"] = release.model_dump(mode="json")
        evidence["dirty_tree"] = dirty
        # Not release pins: the pipeline image is pinned by environments/argocd/rollback-controller-values.yaml.
        evidence["tool_images"] = tool_images
        if not images_built:
            evidence["digests_are"] = "content digests of the build context (no image was built)"
    result = StageResult.from_checks(
        NAME, checks, seconds=total.seconds, logs=str(out), artifacts=artifacts, evidence=evidence
    )
    failed = [c.name for c in result.failures()]
    result.summary = (
        f"failed: {', '.join(failed)}"
        if failed
        else f"release {release.id}; images {'built' if images_built else 'NOT built (content digests)'}"
    )
    return result


def release_of(result: StageResult) -> Release | None:
    """The Release a build result carries (for ci → promote)."""
    data = result.evidence.get("release")
    return Release.model_validate(data) if isinstance(data, dict) else None
