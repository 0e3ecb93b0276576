"""`loadtest`: Locust streaming load through the gateway, judged by the env's SLO file.

Without `--target` the simulator and the gateway start locally (torn down after); with it,
the load goes to that URL (a token from $LOADTEST_TOKEN or `--token-file`). Writes into
the run directory: Locust's CSV/JSON/HTML, samples.jsonl, slo.json, PNG plots and
loadtest.md linking them. FAILED names every breached threshold.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import slo as slo_mod
from loadtests.runner import LocustRun, LocustSpec, run_locust
from pipeline.artifacts.release_pod import PodImages
from pipeline.core.context import RunContext
from pipeline.core.environments import env_names
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.probes.load_profile import DEFAULT_MODEL, DEFAULT_SIMULATOR_ARGS, TOKEN_ROLES
from pipeline.runtime.procs import ProcessFailed

log = logging.getLogger(__name__)

NAME = "loadtest"
HELP = "Locust streaming load through the gateway; SLO gate on TTFT/ITL/E2E, errors, throughput, goodput"
CACHE_INPUTS = ("app", "pipeline", "loadtests", "pyproject.toml", "uv.lock")


@dataclass
class LoadtestOptions:
    env: str = field(default_factory=lambda: env_names()[0])
    target: str | None = None
    duration: float | None = None
    users: int | None = None
    shape: str | None = None
    workers: int = 0
    model: str = DEFAULT_MODEL
    slo_file: Path | None = None
    # For --target: JWTs, one per line (else $LOADTEST_TOKEN, else no Authorization header).
    token_file: Path | None = None
    # Extra simulator flags (later ones win), e.g. ("--ttft-ms", "1500") to plant a slow model.
    simulator_args: Sequence[str] = field(default_factory=tuple)
    seed: int = 0
    # Append the result to the evidence of the release pinned in `env` (a GitOps commit).
    attach: bool = False
    gitops_repo: str | None = None
    actor: str | None = None
    # With --target: image digests the caller asserts serve the target ({"gateway": ..., "vllm": ...}).
    subject_digests: dict[str, str] = field(default_factory=dict)
    # With --target: what serves in place of the release's vLLM image (a CPU run of a GPU release).
    vllm_stand_in: str | None = None
    # The chart's pod: the gateway image with the simulator image standing in for vLLM (by digest).
    pod: PodImages | None = None
    # Why the working tree's processes run instead of the pod (recorded as a substitution).
    fallback: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=env_names()[0], choices=env_names(), help="SLO file loadtests/slo/ENV.yaml")
    parser.add_argument("--target", help="gateway URL to load (default: start simulator + gateway locally)")
    parser.add_argument("--duration", type=float, help="seconds of load (default: the SLO file's run.duration_s)")
    parser.add_argument("--users", type=int, help="concurrent users (default: the SLO file's run.users)")
    parser.add_argument("--shape", choices=["steady", "ramp", "spike"], help="load shape (default: SLO file)")
    parser.add_argument("--workers", type=int, default=0, help="distributed: a Locust master + N local workers")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="served model name (default: %(default)s)")
    parser.add_argument("--slo-file", type=Path, help="SLO YAML instead of loadtests/slo/ENV.yaml")
    parser.add_argument("--token-file", type=Path, help="with --target: JWTs, one per line (else $LOADTEST_TOKEN)")
    parser.add_argument(
        "--subject-digests",
        type=_digests_arg,
        default={},
        metavar="gateway=sha256:…,vllm=sha256:…",
        help="with --target: the image digests serving the target, as the caller that started them asserts "
        "(recorded in the evidence subject as asserted; --attach keeps them and adds the env's pins)",
    )
    parser.add_argument(
        "--vllm-stand-in",
        metavar="TEXT",
        help="with --target: what serves in place of the release's vLLM image (e.g. its CPU build), recorded in "
        "the evidence subject as vllm_stand_in; contradicts a vllm digest in --subject-digests",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed for prompts and lengths")
    parser.add_argument(
        "--attach",
        action="store_true",
        help="append the result (passed or failed) to the evidence of the release pinned in ENV in the GitOps repo "
        "(one commit): the SLO gate `promote --from ENV` requires",
    )
    parser.add_argument(
        "--gitops-repo", help="with --attach: GitOps remote URL (default: $PIPELINE_GITOPS_REPO or local)"
    )
    parser.add_argument("--actor", help="with --attach: override who records it (default: the CI identity / git user)")
    sim = parser.add_argument_group("local simulator (ignored with --target)")
    sim.add_argument("--sim-ttft-ms", type=float, help="simulator time to first token (plant a slow model)")
    sim.add_argument("--sim-itl-ms", type=float, help="simulator inter-token latency")
    sim.add_argument("--sim-error-rate", type=float, help="simulator share of requests answered with an error")
    sim.add_argument(
        "--sim-arg", action="append", default=[], metavar="ARG", help="raw simulator flag, e.g. --sim-arg=--seed=3"
    )


def _digests_arg(text: str) -> dict[str, str]:
    from pipeline.gitops.evidence import parse_subject_digests

    try:
        return parse_subject_digests(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def simulator_args_from(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for flag, value in (
        ("--ttft-ms", args.sim_ttft_ms),
        ("--itl-ms", args.sim_itl_ms),
        ("--error-rate", args.sim_error_rate),
    ):
        if value is not None:
            out += [flag, f"{value:g}"]
    return out + list(args.sim_arg)


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    opts = LoadtestOptions(
        env=args.env,
        target=args.target,
        duration=args.duration,
        users=args.users,
        shape=args.shape,
        workers=args.workers,
        model=args.model,
        slo_file=args.slo_file,
        token_file=args.token_file,
        simulator_args=tuple(simulator_args_from(args)),
        seed=args.seed,
        attach=args.attach,
        gitops_repo=args.gitops_repo,
        actor=args.actor,
        subject_digests=args.subject_digests,
        vllm_stand_in=args.vllm_stand_in,
    )
    if opts.attach and not opts.target:
        # The gate vouches for the env's release: run its images when they were built and pushed.
        opts.pod, opts.fallback = env_release_pod(opts, ctx)
    return run(opts, ctx)


def env_release_pod(opts: LoadtestOptions, ctx: RunContext) -> tuple[PodImages | None, str | None]:
    """The chart's pod from the images of the release `opts.env` runs (GitOps pins, embedded registry):
    the gateway by its pinned digest, the simulator image of the same build standing in for vLLM.
    (None, why) when the release has no built images here or no engine can play pods."""
    from pipeline.gitops.env_images import env_pod_images
    from pipeline.gitops.repo import resolve_remote, work_dir_for
    from pipeline.runtime import engine, registry

    status = engine.current()
    reg = registry.status()
    _, images, why = env_pod_images(
        resolve_remote(opts.gitops_repo, ctx.repo_root),
        opts.env,
        work_dir_for(ctx.run_dir / "work", "pins"),
        status.engine,
        status.reason,
        (reg.host, reg.local) if reg else None,
    )
    return images, why


def _gate_checks(gate: dict[str, Any]) -> list[Check]:
    checks = []
    for r in gate["rows"]:
        if r["value"] is None:
            detail = r.get("detail") or "no data"
        else:
            unit = f" {r['unit']}" if r["unit"] else ""
            verdict = "within:" if r["passed"] else "BREACHED:"
            detail = f"{verdict} {r['value']:.3f}{unit} {r['op']} {r['limit']:g}{unit} (margin {r['margin']:+.3f})"
            if r.get("detail"):
                detail += f"; {r['detail']}"
        numbers = {} if r["value"] is None else {"value": r["value"], "limit": r["limit"]}
        checks.append(
            Check(
                name=f"slo:{r['name']}",
                status=Status.PASSED if r["passed"] else Status.FAILED,
                detail=detail,
                numbers=numbers,
            )
        )
    return checks


def _numbers(gate: dict[str, Any]) -> dict[str, float]:
    s = gate["summary"]
    out: dict[str, float] = {}
    for key in ("requests", "ok", "failed", "warmup_excluded", "window_s", "rps", "output_tokens_per_s", "error_rate"):
        if s.get(key) is not None:
            out[key] = float(s[key])
    for key in ("goodput_ratio", "goodput_rps"):
        if s.get(key) is not None:
            out[key] = float(s[key])
    for metric, pcts in s.get("latency_ms", {}).items():
        for q, v in pcts.items():
            if v is not None and q != "mean":
                out[f"{metric.removesuffix('_ms')}_{q}_ms"] = float(v)
    return out


def _write_summary(ctx: RunContext, result: StageResult, gate: dict[str, Any] | None, files: list[Path]) -> Path:
    from loadtests.gate import GateReport, Row, Summary

    lines = [f"# Load test: {result.status.value.upper()}", "", result.summary, ""]
    if gate is not None:
        rows = [Row.from_dict(r) for r in gate["rows"]]
        report = GateReport(
            env=gate["env"], passed=gate["passed"], rows=rows, summary=Summary(), aborted=gate["aborted"]
        )
        lines += ["## SLO gate", "", report.markdown(), ""]
        if gate["aborted"]:
            lines += [f"**Aborted early:** {gate['aborted']}", ""]
    lines += ["## Files", ""]
    for p in files:
        rel = os.path.relpath(p, ctx.run_dir)
        lines.append(f"![{p.stem}]({rel})" if p.suffix == ".png" else f"- [{p.name}]({rel})")
    path = ctx.run_dir / "loadtest.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _breach(r: dict[str, Any]) -> str:
    """`ttft.p95 1701 ms > 1000 ms` (the inverted operator reads as what went wrong)."""
    if r["value"] is None:
        return f"{r['name']} ({r.get('detail') or 'no data'})"
    unit = f" {r['unit']}" if r["unit"] else ""
    bad_op = ">" if r["op"] == "<=" else "<"
    value = f"{r['value']:.0f}" if abs(r["value"]) >= 100 else f"{r['value']:.3g}"
    return f"{r['name']} {value}{unit} {bad_op} {r['limit']:g}{unit}"


def _headline(slo: slo_mod.SLO, gate: dict[str, Any]) -> str:
    s = gate["summary"]
    lat = s["latency_ms"]

    def fmt(v: float | None, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    return (
        f"{slo.env}: {s['requests']} requests in {s['window_s']:.0f}s, {fmt(s['rps'], '.1f')} req/s, "
        f"{fmt(s['output_tokens_per_s'], '.0f')} tok/s, TTFT p95 {fmt(lat['ttft_ms']['p95'], '.0f')} ms, "
        f"ITL p95 {fmt(lat['itl_ms']['p95'], '.0f')} ms, errors {fmt((s['error_rate'] or 0) * 100, '.1f')}%, "
        f"goodput {fmt((s['goodput_ratio'] or 0) * 100, '.0f')}%"
    )


def ci_options(upstream: dict[str, StageResult], ctx: RunContext) -> LoadtestOptions:
    """In `ci`: the chart's pod from the pushed gateway + simulator images, else the working tree (recorded)."""
    build = upstream.get("build")
    images = (build.evidence.get("images") or {}) if build is not None else {}
    refs = {n: (images.get(n) or {}).get("ref") for n in ("gateway", "simulator")}
    if refs["gateway"] and refs["simulator"]:
        from pipeline.runtime.registry import is_loopback

        tls = not is_loopback(str(refs["gateway"]))
        return LoadtestOptions(pod=PodImages(refs["gateway"], refs["simulator"], "simulator", tls_verify=tls))
    return LoadtestOptions(fallback="build pushed no gateway + simulator images")


def run(opts: LoadtestOptions, ctx: RunContext) -> StageResult:
    """Load the SLO, reach or start the service, run Locust, gate, plot, report."""
    checks: list[Check] = []
    from pipeline.gitops.repo import safe_url

    target = safe_url(opts.target) if opts.target else None
    if opts.subject_digests and not opts.target:
        why = "--subject-digests needs --target: without it the load runs the source tree and the simulator, not images"
        return StageResult.from_checks(NAME, [Check(name="options", status=Status.FAILED, detail=why)], summary=why)
    if opts.vllm_stand_in and (not opts.target or "vllm" in opts.subject_digests):
        why = (
            "--vllm-stand-in needs --target"
            if not opts.target
            else "--vllm-stand-in and a vllm digest in --subject-digests contradict: which one served?"
        )
        return StageResult.from_checks(NAME, [Check(name="options", status=Status.FAILED, detail=why)], summary=why)
    evidence: dict[str, Any] = {"env": opts.env, "target": target, "model": opts.model, "subject": _subject(opts, ctx)}
    if opts.fallback:
        evidence["substitutions"] = [f"working-tree processes instead of the chart's pod: {opts.fallback}"]
    slo_path = opts.slo_file or slo_mod.path_for(opts.env)
    try:
        slo = slo_mod.load(slo_path)
    except slo_mod.SLOFileError as exc:
        return StageResult(
            stage=NAME,
            status=Status.FAILED,
            summary=str(exc).splitlines()[0],
            checks=[Check(name="slo-file", status=Status.FAILED, detail=str(exc))],
        )
    users = opts.users or slo.run.users
    duration = opts.duration or slo.run.duration_s
    if duration <= slo.run.warmup_s:
        return StageResult(
            stage=NAME,
            status=Status.FAILED,
            summary=f"--duration {duration:g}s leaves nothing after the {slo.run.warmup_s:g}s warm-up",
        )
    evidence.update(
        slo_file=str(slo_path),
        users=users,
        duration_s=duration,
        shape=opts.shape or slo.run.shape,
        workers=opts.workers,
        warmup_s=slo.run.warmup_s,
    )
    out_dir = ctx.run_dir / "loadtest"
    run_result: LocustRun | None = None
    with Timer() as total:
        from pipeline.runtime.pod import PodFailed

        try:
            run_result = _run_against_service(opts, ctx, slo, slo_path, users, duration, out_dir, evidence)
        except ProcessFailed as exc:
            checks.append(Check(name="stack", status=Status.FAILED, detail=str(exc)[-2000:]))
        except PodFailed as exc:
            checks.append(Check(name="pod", status=Status.FAILED, detail=str(exc)[-3000:]))
    files: list[Path] = []
    gate: dict[str, Any] | None = None
    if run_result is not None:
        gate = run_result.gate
        files += run_result.artifacts()
        evidence["locust_exit_code"] = run_result.exit_code
        if gate is None:
            tail = (
                "\n".join(run_result.logs[0].read_text(errors="replace").splitlines()[-25:])
                if run_result.logs[0].exists()
                else ""
            )
            checks.append(
                Check(
                    name="locust",
                    status=Status.FAILED,
                    detail=f"no slo.json (exit code {run_result.exit_code}, timed out: {run_result.timed_out}):\n{tail}",
                )
            )
        else:
            checks += _gate_checks(gate)
            from loadtests.plots import run_plots

            try:
                files += run_plots(run_result.samples, gate["t_start"], slo, out_dir, gate["t_end"])
            except Exception as exc:  # a plot bug must not hide the gate verdict
                log.exception("plotting failed")
                checks.append(Check(name="plots", status=Status.FAILED, detail=f"{type(exc).__name__}: {exc}"))
        files += [p for p in (out_dir / "slo.json", out_dir / "samples.jsonl") if p.exists()]
    result = StageResult.from_checks(NAME, checks, evidence=evidence, logs=str(out_dir), seconds=total.seconds)
    if gate is not None:
        result.numbers = _numbers(gate)
        result.evidence["slo"] = {k: gate[k] for k in ("passed", "aborted", "rows")}
        breached = [_breach(r) for r in gate["rows"] if not r["passed"]]
        result.summary = _headline(slo, gate) + (f"; BREACHED: {'; '.join(breached)}" if breached else "; all SLOs met")
    else:
        result.summary = "; ".join(f"{c.name}: {c.detail.splitlines()[0]}" for c in result.failures()) or "no result"
    summary_md = _write_summary(ctx, result, gate, files)
    result.artifacts = [os.path.relpath(p, ctx.run_dir) for p in [summary_md, *files]]
    if opts.attach:
        _attach(opts, ctx, result)
    return result


def _subject(opts: LoadtestOptions, ctx: RunContext) -> dict[str, Any]:
    """What the load exercised (promotion evidence).

    `--target`: the env's deployment at that URL (`--attach` adds the pins git says it runs), plus
    the image digests the caller asserts serve it (`--subject-digests`, recorded as asserted);
    locally: the gateway from the source tree in front of the simulator (never a release image).
    """
    from pipeline.gitops.evidence import source_subject, with_asserted_digests
    from pipeline.gitops.repo import safe_url

    if opts.target:
        subject: dict[str, Any] = {"kind": "deployment", "env": opts.env, "url": safe_url(opts.target)}
        if opts.vllm_stand_in:
            subject["vllm_stand_in"] = opts.vllm_stand_in
        return with_asserted_digests(subject, opts.subject_digests) if opts.subject_digests else subject
    if opts.pod is not None:
        # The gateway image as the chart runs it; the simulator image stands in for vLLM (recorded).
        return {
            "kind": "pod",
            "env": opts.env,
            "gateway_digest": opts.pod.gateway.rpartition("@")[2],
            "gateway": opts.pod.gateway,
            "vllm_stand_in": opts.pod.vllm,
            "model_server": "vLLM-compatible simulator image standing in for vLLM",
        }
    return source_subject(
        ctx.repo_root,
        "simulator",
        env=opts.env,
        gateway="source tree (not an image)",
        model_server="vLLM-compatible simulator (app/simulator)",
    )


def _attach(opts: LoadtestOptions, ctx: RunContext, result: StageResult) -> None:
    """Append `result` to the evidence of the release pinned in `opts.env` (atomic GitOps commit)."""
    from pipeline.gitops import promotion as pm
    from pipeline.gitops.evidence import attach_result
    from pipeline.gitops.repo import GitOpsError, resolve_remote, work_dir_for

    who = pm.actor_identity(opts.actor, ctx.repo_root)
    try:
        remote = resolve_remote(opts.gitops_repo, ctx.repo_root)
        done = attach_result(remote, work_dir_for(ctx.run_dir / "work"), opts.env, result, ctx.run_dir.name, who)
    except (GitOpsError, pm.PromotionError, OSError) as exc:
        result.checks.append(Check(name="attach", status=Status.FAILED, detail=f"{exc} (nothing pushed)"))
        result.status = Status.FAILED
        result.summary += f"; NOT attached: {exc}"
        return
    subject = done.record.get("subject") or {}
    vouches = subject.get("release_id") == done.release.id
    detail = (
        f"{done.key} ({done.record['status']}) attached to {done.release.id} in {opts.env} as "
        f"{(done.sha or '')[:12]}: {done.path}"
    )
    if not vouches:
        detail += (
            f"; WARNING: it ran {subject.get('kind', '?')} at commit {str(subject.get('commit', '?'))[:12]}, "
            f"not the release's source, so promotion policy will not count it"
        )
    result.checks.append(Check(name="attach", status=Status.PASSED, detail=detail))
    result.evidence["attached"] = {"commit": done.sha, "path": done.path, "key": done.key, "release": done.release.id}
    result.summary += f"; attached to {done.release.id} in {opts.env}"


def _run_against_service(
    opts: LoadtestOptions,
    ctx: RunContext,
    slo: slo_mod.SLO,
    slo_path: Path,
    users: int,
    duration: float,
    out_dir: Path,
    evidence: dict[str, Any],
) -> LocustRun:
    spec = LocustSpec(
        host="",
        out_dir=out_dir,
        users=users,
        duration_s=duration,
        slo_file=slo_path,
        shape=opts.shape or "",
        model=opts.model,
        workers=opts.workers,
        seed=opts.seed,
        timeout_s=slo.run.timeout_s,
    )
    if opts.target:
        spec.host = opts.target.rstrip("/")
        if opts.token_file:
            spec.token_file = opts.token_file
        ctx.progress(f"load: {users} users for {duration:g}s against {spec.host}")
        return run_locust(spec)
    from pipeline.runtime.local_stack import local_stack  # imported late so `--help` stays light

    sim_args = (*DEFAULT_SIMULATOR_ARGS, *opts.simulator_args)
    evidence["simulator_args"] = list(sim_args)
    if opts.pod is not None:
        return _run_against_pod(opts, ctx, spec, users, duration, out_dir, evidence, sim_args)
    ctx.progress("starting the simulator and the gateway")
    with local_stack(ctx.run_dir / "stack", model=opts.model, simulator_args=sim_args) as stack:
        evidence["gateway_url"] = stack.gateway_url
        spec.host = stack.gateway_url.rstrip("/")
        # One JWT per simulated user, so per-subject rate limits and audit see distinct clients.
        token_file = out_dir / "tokens.txt"
        out_dir.mkdir(parents=True, exist_ok=True)
        token_file.touch(mode=0o600)
        token_file.write_text(
            "".join(
                stack.mint(sub=f"loadtest-{i}", roles=TOKEN_ROLES, ttl=int(duration) + 600) + "\n" for i in range(users)
            )
        )
        spec.token_file = token_file
        try:
            ctx.progress(f"load: {users} users for {duration:g}s ({spec.shape or slo.run.shape}) through the gateway")
            return run_locust(spec)
        finally:
            token_file.unlink(missing_ok=True)  # bearer tokens never outlive the run


def _run_against_pod(
    opts: LoadtestOptions,
    ctx: RunContext,
    spec: LocustSpec,
    users: int,
    duration: float,
    out_dir: Path,
    evidence: dict[str, Any],
    sim_args: Sequence[str],
) -> LocustRun:
    """Load the chart's pod (gateway image + simulator image for vLLM) through the gateway's published port."""
    from ruamel.yaml import YAML

    from pipeline.artifacts.release_pod import release_pod
    from pipeline.runtime import engine as engines
    from pipeline.runtime.local_stack import default_rbac
    from pipeline.runtime.pod import PodFailed

    assert opts.pod is not None
    status = engines.current()
    if status.engine is None or not status.engine.can_play_pods:
        raise PodFailed(f"no engine that plays pods: {status.reason}")
    import io

    buf = io.StringIO()
    YAML(typ="safe", pure=True).dump(default_rbac(opts.model), buf)
    with release_pod(
        ctx.repo_root,
        opts.env,
        opts.pod,
        status.engine,
        ctx.run_dir / "loadtest-pod",
        # The env's tier limits would throttle the load itself: load-test limits (recorded).
        rbac_yaml=buf.getvalue(),
        simulator_args=sim_args,
        progress=ctx.progress,
    ) as pod:
        evidence["pod"] = pod.evidence
        evidence["gateway_url"] = pod.gateway_url
        spec.host = pod.gateway_url
        spec.model = pod.model
        evidence["model"] = pod.model
        token_file = out_dir / "tokens.txt"
        out_dir.mkdir(parents=True, exist_ok=True)
        token_file.touch(mode=0o600)
        ttl = int(duration) + 600
        token_file.write_text("".join(pod.mint(f"loadtest-{i}", TOKEN_ROLES, ttl) + "\n" for i in range(users)))
        spec.token_file = token_file
        try:
            ctx.progress(f"load: {users} users for {duration:g}s through the pod's gateway ({pod.evidence['pod']})")
            return run_locust(spec)
        finally:
            token_file.unlink(missing_ok=True)
