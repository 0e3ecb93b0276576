"""`scan`: Trivy secret scan of the repository, config scan of Dockerfiles (and a rendered
chart), CycloneDX SBOM, and vulnerability scans of images + the lockfile where a
vulnerability DB exists.

Gate: no CRITICAL/HIGH vulnerability with a fix available, no CRITICAL/HIGH
misconfiguration, no secret — except entries of the ignore file, each with a reason and an
unexpired date (an expired or reasonless entry fails the gate).

No DB here (none can be downloaded): the vulnerability check is SKIPPED with the reason,
never passed. In CI/Dagger the DB is downloaded (`--download-db`, the default there).

Evidence subject (`evidence.subject`, what promotion policy matches to the release): the source
tree the secret/config/SBOM scans read (`commit`, `dirty`, build-context `content_digests`) plus,
for every `--image repo@sha256:...`, its digest — `gateway_digest`/`vllm_digest` when the
repository's last path segment names a release image (`.../gateway@sha256:...`) — and whether
its vulnerability scan ran (`images[].vulnerabilities`: passed/failed/skipped). A tag without a
digest identifies no image and is recorded, never mapped to a pin.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checks import image_source, trivy_ignore
from pipeline.checks.trivy_scan import (
    blind_spots,
    db_present,
    gate_secrets,
    gate_vulnerabilities,
    skip_args,
    trivy_cache_dir,
    trivy_json,
    trivy_json_tree,
    verdict,
)
from pipeline.core.cache import Extra
from pipeline.core.context import RunContext
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.core.shell import run_command, tail
from pipeline.gitops.release import DIGEST_RE
from pipeline.runtime.engine import Engine
from pipeline.runtime.tools import find

log = logging.getLogger(__name__)

NAME = "scan"
HELP = "Trivy: secrets, Dockerfile/chart config, SBOM (CycloneDX), image + lockfile vulnerabilities; ignore-file gate"
CACHE_INPUTS = (".",)  # the secret scan reads every file
CACHE_TOOLS = ("trivy",)


@dataclass
class ScanOptions:
    root: Path | None = None
    images: list[str] = field(default_factory=list)  # image refs (repo@sha256:...) to scan for vulnerabilities
    render_dir: Path | None = None  # rendered manifests to config-scan
    ignorefile: Path | None = None  # default: <root>/.trivyignore.yaml
    download_db: bool | None = None  # None: only under the Dagger executor
    today: dt.date | None = None  # for tests: the date expiry is judged against
    # Images `build` made: name → {"local": engine ref, "ref": registry/repo@digest, "digest": …}.
    # Each is scanned from the image itself (secrets, misconfigurations, SBOM); `ci` fills this in.
    built: dict[str, dict[str, str]] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, help="directory to scan (default: this repository)")
    parser.add_argument(
        "--image", dest="images", action="append", default=[], help="image ref to scan for vulnerabilities (repeatable)"
    )
    parser.add_argument("--render-dir", type=Path, help="rendered chart manifests to config-scan")
    parser.add_argument("--ignorefile", type=Path, help="ignore file (default: .trivyignore.yaml at the root)")
    parser.add_argument(
        "--download-db",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="download the vulnerability DB if absent (default: yes under Dagger, no locally)",
    )


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    return run(
        ScanOptions(
            root=args.root,
            images=args.images,
            render_dir=args.render_dir,
            ignorefile=args.ignorefile,
            download_db=args.download_db,
        ),
        ctx,
    )


def cache_extra(opts: ScanOptions | argparse.Namespace, root: Path) -> Extra:
    """Facts of the machine and the day: the vulnerability DB (present? which?) and today's date
    (ignore entries expire, so yesterday's pass is not today's)."""
    db = trivy_cache_dir() / "db"
    facts: dict[str, str] = {"today": dt.datetime.now(dt.UTC).date().isoformat()}
    for name in ("trivy.db", "metadata.json"):
        try:
            st = (db / name).stat()
            facts[f"db/{name}"] = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            facts[f"db/{name}"] = "absent"
    ignorefile = getattr(opts, "ignorefile", None)  # may live outside the tree
    return Extra(paths=(str(ignorefile),) if ignorefile else (), facts=facts)


def _load_json(text: str) -> dict[str, Any]:
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _config_targets(root: Path, render_dir: Path | None) -> list[Path]:
    targets = sorted(
        p
        for p in (root / "app").rglob("*")
        if p.is_file() and (p.name == "Dockerfile" or p.name.endswith(".Dockerfile"))
    )
    if render_dir is not None:
        targets.append(render_dir)
    return targets


def run(opts: ScanOptions, ctx: RunContext) -> StageResult:
    root = (opts.root or ctx.repo_root).resolve()
    out = ctx.stage_dir(NAME)
    checks: list[Check] = []
    artifacts: list[str] = []
    trivy = find("trivy")
    if trivy is None:
        check = Check(name="trivy", status=Status.FAILED, detail="trivy not installed (`make venv`)")
        return StageResult.from_checks(
            NAME, [check], summary=check.detail, evidence={"subject": scan_subject(root, opts.images, [check])}
        )
    ignore_path = opts.ignorefile or root / trivy_ignore.DEFAULT_PATH
    common = ["--quiet", "--timeout", "10m"]
    with Timer() as total:
        ignores = trivy_ignore.load(ignore_path, opts.today)
        if ignores.problems:
            checks.append(Check(name="ignorefile", status=Status.FAILED, detail="; ".join(ignores.problems)))
        else:
            checks.append(
                Check(name="ignorefile", status=Status.PASSED, detail=f"{len(ignores.entries)} valid entries")
            )

        # Secrets in the working tree (tracked or not: a local leak is still a leak).
        ctx.progress("scan: trivy fs --scanners secret")
        with Timer() as t:
            argv = [trivy, "fs", *common, "--scanners", "secret", *skip_args()]
            failed, report = trivy_json_tree("secrets", argv, Path("."), root, out, out / "secrets.json")
        if failed:
            checks.append(failed)
        else:
            bad, ignored = gate_secrets(report, ignores)
            checks.append(verdict("secrets", bad, ignored, "no secrets found", t.seconds))
            artifacts.append(str(out / "secrets.json"))

        # Misconfigurations: Dockerfiles and the rendered chart.
        targets = _config_targets(root, opts.render_dir)
        if not targets:
            checks.append(Check(name="config", status=Status.SKIPPED, detail="no Dockerfile or rendered chart to scan"))
        for i, target in enumerate(targets):
            rel = target.relative_to(root) if target.is_relative_to(root) else target
            ctx.progress(f"scan: trivy config {rel}")
            with Timer() as t:
                argv = [trivy, "config", *common, "--skip-check-update"]
                failed, report = trivy_json_tree(f"config {rel}", argv, target, root, out, out / f"config-{i}.json")
            if failed:
                checks.append(failed)
                continue
            bad, ignored, n = trivy_ignore.gate_misconfigs(report, ignores)
            checks.append(verdict(f"config {rel}", bad, ignored, f"{n} finding(s) below HIGH", t.seconds))
            artifacts.append(str(out / f"config-{i}.json"))

        # SBOM of the source tree (lockfile packages); needs no DB.
        ctx.progress("scan: SBOM (CycloneDX)")
        checks.append(_source_sbom(trivy, common, root, out, artifacts))

        checks.extend(_vulnerability_checks(trivy, opts, ctx, root, out, ignores, artifacts))
        checks.extend(_built_image_checks(trivy, opts, ctx, root, out, ignores, artifacts))

    failed_names = [c.name for c in checks if c.status is Status.FAILED]
    skipped = [c.name for c in checks if c.status is Status.SKIPPED]
    summary = (
        f"failed: {', '.join(failed_names)}"
        if failed_names
        else "gate passed" + (f"; not proven here: {', '.join(skipped)}" if skipped else "")
    )
    return StageResult.from_checks(
        NAME,
        checks,
        summary=summary,
        seconds=total.seconds,
        logs=str(out),
        artifacts=artifacts,
        evidence={"subject": _with_built(scan_subject(root, opts.images, checks), opts.built, checks)},
    )


def _source_sbom(trivy: str, common: list[str], root: Path, out: Path, artifacts: list[str]) -> Check:
    """CycloneDX SBOM of the tree, plus one per directory trivy's walk skips (`blind_spots`):
    separate documents, as merging CycloneDX graphs by hand would be a second SBOM generator."""
    parts = [(Path("."), out / "sbom.cdx.json")]
    parts += [(s, out / f"sbom.{s.relative_to(root).as_posix().replace('/', '.')}.cdx.json") for s in blind_spots(root)]
    comps, names = 0, []
    for target, sbom in parts:
        rel = target.relative_to(root).as_posix() if target.is_absolute() else ""
        name = f"sbom ({rel})" if rel else "sbom"
        argv = [trivy, "fs", *common, "--format", "cyclonedx", "--output", str(sbom), *skip_args(), str(target)]
        check, _ = run_command(name, argv, cwd=root, log_dir=out)
        if check.status is not Status.PASSED:
            check.name = "sbom"
            return check
        try:
            comps += len(json.loads(sbom.read_text()).get("components") or [])
        except (OSError, ValueError) as exc:
            return Check(name="sbom", status=Status.FAILED, detail=f"SBOM {sbom.name} unreadable: {exc}")
        names.append(sbom.name)
    artifacts += [str(out / n) for n in names]
    return Check(
        name="sbom", status=Status.PASSED, detail=f"{comps} components → {', '.join(names)}",
        numbers={"components": comps},
    )  # fmt: skip


def _with_built(subject: dict[str, Any], built: dict[str, dict[str, str]], checks: list[Check]) -> dict[str, Any]:
    """Name the pushed images this scan read (the vllm pin is the vllm-cpu image where no CUDA image was built)."""
    if not built:
        return subject
    out = dict(subject)
    scanned = {
        n: i for n, i in built.items() if any(c.name == f"image {n}" and c.status is not Status.FAILED for c in checks)
    }
    digests = {n: i.get("digest", "") for n, i in scanned.items()}
    if digests.get("gateway"):
        out["gateway_digest"] = digests["gateway"]
    vllm = digests.get("vllm") or digests.get("vllm-cpu")
    if vllm:
        out["vllm_digest"] = vllm
    out["kind"] = "source+images"
    out["built_images"] = {n: {"digest": d} for n, d in digests.items()}
    return out


def _built_image_checks(
    trivy: str,
    opts: ScanOptions,
    ctx: RunContext,
    root: Path,
    out: Path,
    ignores: trivy_ignore.IgnoreFile,
    artifacts: list[str],
) -> Iterable[Check]:
    """Secrets and misconfigurations in each built image (layers and config), and its SBOM.

    A pushed image is read from its registry by digest; one that was not (or that Trivy cannot
    read there) from an archive the engine exports (image_source says why and what it costs).
    """
    if not opts.built:
        return
    from pipeline.runtime import engine as engines

    status = engines.current()
    local_engine = status.engine if status.engine is not None and status.engine.kind != "dagger" else None
    for name, info in opts.built.items():
        ctx.progress(f"scan: image {name} (secrets, misconfigurations, SBOM)")
        with Timer() as t:
            failed, report, sbom_check, source = _scan_image(trivy, name, info, local_engine, status.reason, root, out)
        if failed:
            yield failed
            continue
        bad_secrets, ignored_s = gate_secrets(report, ignores)
        bad_config, ignored_c, n = trivy_ignore.gate_misconfigs(report, ignores)
        check = verdict(
            f"image {name}",
            bad_secrets + bad_config,
            ignored_s + ignored_c,
            f"no secrets; {n} finding(s) below HIGH; read from {source}",
            t.seconds,
        )
        sbom = _sbom_path(out, name)
        if sbom_check is not None and sbom_check.status is Status.PASSED:
            try:
                comps = len(json.loads(sbom.read_text()).get("components") or [])
                check.detail += f"; SBOM {comps} components"
                check.numbers["components"] = comps
                artifacts.append(str(sbom))
            except (OSError, ValueError):
                pass
        artifacts.append(str(out / f"image-{name}.json"))
        yield check


def _sbom_path(out: Path, name: str) -> Path:
    return out / f"sbom-{name}.cdx.json"


def _scan_image(
    trivy: str,
    name: str,
    info: dict[str, str],
    engine: Engine | None,
    no_engine: str,
    root: Path,
    out: Path,
) -> tuple[Check | None, dict[str, Any], Check | None, str]:
    """(failure or None, secret+misconfig report, SBOM check, where the image was read from)."""

    def scan(source: image_source.ImageSource) -> tuple[Check | None, dict[str, Any], Check | None]:
        common = ["--quiet", "--timeout", "20m", *source.flags]
        target = source.target
        argv = [trivy, "image", *common, "--scanners", "secret,misconfig"]
        argv += ["--image-config-scanners", "misconfig,secret", *target]
        failed, report = trivy_json(f"image {name}", argv, root, out, out / f"image-{name}.json")
        if failed:
            return failed, report, None
        sbom = _sbom_path(out, name)
        sbom_argv = [trivy, "image", *common, "--format", "cyclonedx", "--output", str(sbom), *target]
        sbom_check, _ = run_command(f"sbom {name}", sbom_argv, cwd=root, log_dir=out)
        return None, report, sbom_check

    unreadable = ""
    ref = info.get("ref", "")
    if ref:
        remote = image_source.remote(ref)
        failed, report, sbom_check = scan(remote)
        if failed is None:
            return None, report, sbom_check, remote.described
        unreadable = f"not readable from its registry ({tail(failed.detail, 2)}); "
    if engine is None:
        why = f"{unreadable}no local engine to export {name}: {no_engine}"
        return Check(name=f"image {name}", status=Status.FAILED, detail=why), {}, None, ""
    try:
        with image_source.exported(engine, info.get("local", ""), out / "images" / f"{name}.tar") as archive:
            failed, report, sbom_check = scan(archive)
    except image_source.ImageSourceError as exc:
        return Check(name=f"image {name}", status=Status.FAILED, detail=f"{unreadable}{exc}"), {}, None, ""
    return failed, report, sbom_check, f"{unreadable}{archive.described}"


def image_digest(ref: str) -> tuple[str | None, str | None]:
    """(release image name or None, digest or None) of `registry/path/name[:tag]@sha256:...`.

    The name maps to a release image (`gateway`, `vllm`) when the repository's last path segment
    is that name or ends with `-<name>`; a ref without a well-formed digest yields no digest.
    """
    from pipeline.artifacts.source import TARGETS

    repo, _, digest = ref.partition("@")
    last = repo.rsplit("/", 1)[-1].split(":", 1)[0]
    image = next((t for t in TARGETS if last == t or last.endswith(f"-{t}")), None)
    return image, digest if DIGEST_RE.match(digest) else None


def scan_subject(root: Path, images: Iterable[str], checks: Iterable[Check]) -> dict[str, Any]:
    """What this scan exercised: the source tree (secrets, config, SBOM) and the image digests it was given.

    Every given image is listed with the outcome of its vulnerability scan; a SKIPPED one (no DB)
    stays visible here and in the gate's skipped checks, which policy refuses where it must (prod).
    """
    from pipeline.gitops.evidence import source_subject

    by_name = {c.name: c.status.value for c in checks}
    db_skip = by_name.get("vulnerabilities")  # the whole vulnerability scan was skipped (no DB)
    listed: list[dict[str, Any]] = []
    found: dict[str, set[str]] = {}
    for ref in images:
        image, digest = image_digest(ref)
        status = by_name.get(f"vulnerabilities image {ref}", db_skip or "not run")
        listed.append({"ref": ref, "image": image, "digest": digest, "vulnerabilities": status})
        if image and digest:
            found.setdefault(image, set()).add(digest)
    # Two different digests for one image name vouch for neither: no pin is recorded for it.
    pins = {name: next(iter(d)) for name, d in found.items() if len(d) == 1}
    extra: dict[str, Any] = {"scanned": "source tree: secrets, Dockerfile config, SBOM"}
    if listed:
        extra["images"] = listed
    extra.update({f"{name}_digest": digest for name, digest in pins.items()})
    return source_subject(root, "source+images" if pins else "source", **extra)


def _vulnerability_checks(
    trivy: str,
    opts: ScanOptions,
    ctx: RunContext,
    root: Path,
    out: Path,
    ignores: trivy_ignore.IgnoreFile,
    artifacts: list[str],
) -> Iterable[Check]:
    download = opts.download_db if opts.download_db is not None else ctx.executor == "dagger"
    have_db = db_present()
    if not have_db and not download:
        why = (
            f"no Trivy vulnerability DB in {trivy_cache_dir()} and DB download is off here "
            "(`--download-db` to try; CI/Dagger downloads it) — vulnerabilities NOT scanned"
        )
        yield Check(name="vulnerabilities", status=Status.SKIPPED, detail=why)
        return
    db_flags = ["--skip-db-update"] if have_db and not download else []
    targets: list[tuple[str, list[str], Path | None]] = [
        ("lockfile", ["fs", "--scanners", "vuln", *skip_args()], Path("."))
    ]
    targets += [(f"image {ref}", ["image", "--scanners", "vuln", ref], None) for ref in opts.images]
    if not opts.images:
        yield Check(
            name="vulnerabilities image",
            status=Status.SKIPPED,
            detail="no image refs given (no image was built here) — image vulnerabilities NOT scanned",
        )
    for i, (label, args, tree) in enumerate(targets):
        ctx.progress(f"scan: trivy vulnerabilities {label}")
        with Timer() as t:
            argv = [trivy, *args[:1], "--quiet", "--timeout", "15m", *db_flags, *args[1:]]
            report_path = out / f"vuln-{i}.json"
            if tree is None:  # an image: no directory walk to fill in
                failed, report = trivy_json(f"vulnerabilities {label}", argv, root, out, report_path)
            else:
                failed, report = trivy_json_tree(f"vulnerabilities {label}", argv, tree, root, out, report_path)
        if failed:
            yield failed
            continue
        bad, ignored, counts = gate_vulnerabilities(report, ignores)
        check = verdict(f"vulnerabilities {label}", bad, ignored, "no fixable CRITICAL/HIGH", t.seconds)
        check.numbers.update(counts)
        artifacts.append(str(out / f"vuln-{i}.json"))
        yield check
