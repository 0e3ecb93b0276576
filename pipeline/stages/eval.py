"""`eval`: the model gate — the candidate must reach the floor and not be worse than the baseline.

    python -m pipeline eval [--candidate DIR|REF] [--baseline DIR|REF | --env ENV] [--json]

The candidate (default: the stand-in the record describes, pipeline.models.standin) and the
baseline are each served on REAL vLLM (CPU build) behind the real gateway with the record's
serving arguments, and the record's lm-evaluation-harness suite runs through the gateway
(pipeline.models.eval_gate). Without --baseline the baseline is the model the env runs: the
artifact pinned in environments/<env>/release.yaml (`vllm.model.artifact.*`), pulled by digest;
an env with no model artifact yet gets a floor-only verdict (baseline null).

A model's run is cached by its content digest + serving arguments + suite + vLLM/lm_eval
versions, so an env's baseline is served once. The eval JSON (verdict, scores, McNemar b/c/p,
digests) is the stage evidence under "eval"; promotion reads it there.
Exit 0 pass, 1 blocked, 2 usage, 3 no verdict (the model could not be served or scored).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.artifacts.release_pod import PodImages, pod_images
from pipeline.core.cache import Extra
from pipeline.core.context import RunContext
from pipeline.core.environments import env_names
from pipeline.core.exit_codes import UsageError
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.gitops.release import Release
from pipeline.models import eval_gate
from pipeline.models.record import ModelRecordError, load_record
from pipeline.runtime import vllm_cpu

log = logging.getLogger(__name__)

NAME = "eval"
HELP = "model gate: serve candidate (+ baseline) on vLLM CPU behind the gateway, lm_eval suite, floor + exact McNemar"
# What the verdict depends on inside the tree (ci's cache): the record, its suite, the gate's code.
CACHE_INPUTS = ("app/model.yaml", "evals", "pipeline/models", "pipeline/runtime/vllm_cpu.py")
# An image reference: registry/name[:tag][@sha256:...] (a path that exists is a directory instead).
REF_RE = re.compile(r"^[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+(:[\w.-]+)?(@sha256:[0-9a-f]{64})?$")


@dataclass
class EvalOptions:
    candidate: str | None = None  # DIR or REF; None = the record's stand-in
    baseline: str | None = None  # DIR or REF; None = what `env` runs
    env: str | None = None  # None = the first env
    # The GitOps remote the env's pins are read from (None = $PIPELINE_GITOPS_REPO or the local one).
    gitops_repo: str | None = None
    no_cache: bool = False
    timeout: float = vllm_cpu.DEFAULT_READY_TIMEOUT
    # In `ci`, after build pushed the images: each model is served as the env's pod (release_pod) from
    # these images with `release`'s pins (the build's Release as JSON) holding that model's artifact.
    pod: PodImages | None = None
    release: dict[str, Any] | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--candidate", metavar="DIR|REF", help="model directory or model artifact reference (default: the stand-in)"
    )
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--baseline", metavar="DIR|REF", help="compare against this model instead of the env's")
    base.add_argument("--env", choices=env_names(), help="compare against the model this env runs (default: first)")
    parser.add_argument(
        "--gitops-repo",
        metavar="URL",
        help="GitOps remote whose pins name the env's model (default: $PIPELINE_GITOPS_REPO or the local one)",
    )
    parser.add_argument("--no-cache", action="store_true", help="serve both models again; ignore cached runs")
    parser.add_argument(
        "--timeout",
        type=float,
        default=vllm_cpu.DEFAULT_READY_TIMEOUT,
        help="seconds to wait for each vLLM server (default: %(default)s)",
    )
    # `--json` = `-o json`: the stage result, whose evidence.eval is the gate's JSON (with `seconds`).
    parser.add_argument(
        "--json", dest="output", action="store_const", const="json", default=argparse.SUPPRESS, help="same as -o json"
    )


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    return run(
        EvalOptions(
            candidate=args.candidate,
            baseline=args.baseline,
            env=args.env,
            gitops_repo=args.gitops_repo,
            no_cache=args.no_cache,
            timeout=args.timeout,
        ),
        ctx,
    )


def cache_extra(opts: object, root: Path) -> Extra:
    """Outside the tree: the vLLM venv (versions), the candidate's weights (its directory) and, when
    the baseline is the env's model, what the GitOps remote pins (`_env_baseline` reads it there)."""
    paths = [str(vllm_cpu.venv_dir() / vllm_cpu.MARKER)]
    cand = getattr(opts, "candidate", None)
    if cand and Path(cand).is_dir():
        paths.append(str(Path(cand).resolve()))
    facts: dict[str, Any] = {}
    if not getattr(opts, "baseline", None):
        facts["baseline_pins"] = _remote_pins(root, getattr(opts, "gitops_repo", None))
    return Extra(paths=tuple(paths), facts=facts)


def _remote_pins(root: Path, url: str | None = None) -> str:
    """Identity of what the baseline's remote pins: its main's commit (`git ls-remote`, local or URL; any
    promotion moves it, which re-judges conservatively); the tree's environments/ when no remote exists yet
    (`remote_for_reading` then seeds one from them); "unreadable" lets the stage run and say why."""
    import subprocess

    from pipeline.gitops.repo import ENV_VAR

    remote = url or os.environ.get(ENV_VAR) or ""
    default = root / ".gitops" / "gitops.git"
    if not remote and not (default / "HEAD").exists():
        envs = sorted((root / "environments").glob("*/release.yaml"))
        return hashlib.sha256(b"".join(p.read_bytes() for p in envs)).hexdigest()
    try:
        out = subprocess.run(
            ["git", "ls-remote", remote or str(default), "refs/heads/main"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unreadable"
    return out.split()[0] if out.strip() else "empty"


def ci_options(upstream: dict[str, StageResult], ctx: RunContext) -> EvalOptions:
    """In `ci`: the model build packaged, else the stand-in; baseline = the first env's. With the images
    pushed too, both models are served as the env's pod from them (the chart's model-fetch pulls each)."""
    build = upstream.get("build")
    artifact = (build.evidence.get("model_artifact") or {}) if build is not None else {}
    ref = artifact.get("ref") if isinstance(artifact, dict) else None
    if not ref:
        return EvalOptions()
    assert build is not None
    images = build.evidence.get("images") or {}
    refs = {n: (images.get(n) or {}).get("ref") for n in ("gateway", "vllm-cpu")}
    release = build.evidence.get("release")
    if refs["gateway"] and refs["vllm-cpu"] and isinstance(release, dict):
        pod = pod_images(str(refs["gateway"]), str(refs["vllm-cpu"]), "vllm-cpu")
        return EvalOptions(candidate=str(ref), pod=pod, release=release)
    return EvalOptions(candidate=str(ref))


def _pull(ref: str, out: Path, expected: str | None, label: str) -> eval_gate.ModelSpec:
    try:
        from pipeline.models.artifact import pull_model  # owner H3
        from pipeline.runtime import engine as engines
    except ImportError as exc:  # pragma: no cover - until the artifact module lands
        raise eval_gate.EvalSetupError(f"cannot pull {ref}: pipeline.models.artifact is not available ({exc})") from exc
    status = engines.current()
    if status.engine is None:
        raise eval_gate.EvalSetupError(f"cannot pull {ref}: no container engine ({status.reason})")
    digest = pull_model(ref, out, engine=status.engine, expected=expected)
    spec = eval_gate.dir_spec(out, label=label)
    if spec.content_digest != digest:
        raise eval_gate.EvalSetupError(f"{ref}: pulled content {spec.content_digest} != the artifact's {digest}")
    return eval_gate.ModelSpec(path=out, content_digest=digest, source=ref, label=label, artifact=ref)


def _resolve(value: str, work: Path, label: str, ctx: RunContext) -> eval_gate.ModelSpec:
    """A directory (relative to the repo or the cwd) or an artifact reference; UsageError otherwise."""
    path = Path(value)
    for candidate in (path, ctx.repo_root / path):
        if candidate.is_dir():
            return eval_gate.dir_spec(candidate, label=label)
    if REF_RE.match(value):
        return _pull(value, work / f"{label}-model", None, label)
    raise UsageError(f"--{label} {value!r} is neither a model directory nor an artifact reference (host/name@sha256:…)")


def _env_baseline(
    env: str, work: Path, ctx: RunContext, gitops_repo: str | None = None
) -> tuple[eval_gate.ModelSpec | None, str]:
    """The model `env` runs (its release's artifact pins in the GitOps repo promotion reads), or None
    when it pins no artifact yet."""
    from pipeline.gitops import promotion as pm
    from pipeline.gitops.repo import GitOpsError, GitOpsRepo, safe_url, work_dir_for

    # The GitOps remote ($PIPELINE_GITOPS_REPO or the local one), not the tree's copy: the promotion
    # compares the eval's baseline with what the remote pins.
    remote = pm.remote_for_reading(gitops_repo, ctx.repo_root, ctx.run_dir)
    repo = GitOpsRepo(remote, work_dir_for(ctx.run_dir / "work"))
    path = f"{safe_url(remote)}:environments/{env}/release.yaml"
    try:
        repo.sync()
        values = repo.read_yaml(f"environments/{env}/release.yaml") or {}
    except (OSError, ValueError, GitOpsError) as exc:
        raise eval_gate.EvalSetupError(f"{path}: cannot read the env's release: {exc}") from exc
    release = Release.from_values(values)
    if release.model_artifact is None:
        return None, f"{env} pins no model artifact yet: floor-only verdict"
    spec = _pull(release.model_artifact, work / "baseline-model", release.model_content_digest, "baseline")
    return spec, f"baseline: the model {env} runs ({release.model_artifact})"


def _stand_in(ctx: RunContext) -> eval_gate.ModelSpec:
    from pipeline.models import standin  # owner H1

    record = load_record(ctx.repo_root)
    built = standin.ensure_model_dir(record, progress=ctx.progress)
    return eval_gate.ModelSpec(
        path=Path(built.path), content_digest=built.content_digest, source="stand-in", label="candidate"
    )


def _server(opts: EvalOptions, ctx: RunContext, evidence: dict[str, Any]) -> eval_gate.ModelServer | None:
    """The env's pod when `opts.pod` (and an engine that plays pods), else processes (None); recorded."""
    if opts.pod is None or opts.release is None:
        evidence["served_by"] = "processes (vLLM CPU venv + the gateway from the working tree)"
        return None
    from pipeline.models.eval_pod import PodServer
    from pipeline.runtime import engine as engines

    status = engines.current()
    if status.engine is None or not status.engine.can_play_pods:
        why = f"models served as processes, not the env's pod: no engine that plays pods ({status.reason})"
        evidence["served_by"], evidence["substitutions"] = "processes", [why]
        return None
    env = opts.env or env_names()[0]
    evidence["served_by"] = f"the {env} chart's pod (images {opts.pod.gateway}, {opts.pod.vllm})"
    return PodServer(ctx.repo_root, env, opts.pod, release_pins(Release.model_validate(opts.release)), status.engine)


def release_pins(release: Release) -> Callable[[str, str], dict[str, Any]]:
    """(artifact, content digest) → the run's release values with the model pins replaced by that artifact's."""

    def pins(artifact: str, content_digest: str) -> dict[str, Any]:
        repository, digest = artifact.split("@", 1)
        update = {"model_repository": repository, "model_digest": digest, "model_content_digest": content_digest}
        return release.model_copy(update=update).to_values()

    return pins


def run(opts: EvalOptions, ctx: RunContext) -> StageResult:
    checks: list[Check] = []
    evidence: dict[str, Any] = {}
    work = ctx.stage_dir(NAME)
    with Timer() as t:
        try:
            server = _server(opts, ctx, evidence)
            record = load_record(ctx.repo_root)
            candidate = _resolve(opts.candidate, work, "candidate", ctx) if opts.candidate else _stand_in(ctx)
            if opts.baseline:
                baseline: eval_gate.ModelSpec | None = _resolve(opts.baseline, work, "baseline", ctx)
                why = f"baseline: {opts.baseline}"
            else:
                baseline, why = _env_baseline(opts.env or env_names()[0], work, ctx, opts.gitops_repo)
            ctx.progress(why)
            outcome = eval_gate.run_gate(
                candidate,
                baseline,
                record=record,
                root=ctx.repo_root,
                work_dir=work,
                reuse_candidate=not opts.no_cache,
                reuse_baseline=not opts.no_cache,
                timeout=opts.timeout,
                progress=ctx.progress,
                server=server,
            )
        except (eval_gate.EvalSetupError, ModelRecordError, ValueError) as exc:
            check = Check(name="eval", status=Status.FAILED, detail=str(exc)[-3000:])
            return StageResult.from_checks(NAME, [check], summary=str(exc)[:300], error=True, logs=str(work))
    res = outcome.result
    res["seconds"] = t.seconds  # the whole verb, model resolution included
    evidence["eval"] = res
    evidence["baseline_reason"] = why
    cand = res["candidate"]
    checks.append(
        Check(
            name="candidate",
            status=Status.PASSED,
            detail=f"{cand['correct']}/{res['n_items']} correct ({cand['score']:.3f}), {cand['content_digest']}"
            + (" (cached)" if cand["cached"] else ""),
            seconds=outcome.candidate.seconds,
            numbers={"score": cand["score"]},
        )
    )
    if res["baseline"] is not None:
        base = res["baseline"]
        checks.append(
            Check(
                name="baseline",
                status=Status.PASSED,
                detail=f"{base['correct']}/{res['n_items']} correct ({base['score']:.3f}), {base['content_digest']}"
                + (" (cached)" if base["cached"] else ""),
                seconds=outcome.baseline.seconds if outcome.baseline else 0.0,
                numbers={"score": base["score"]},
            )
        )
    verdict = Status.PASSED if outcome.passed else Status.FAILED
    mc = res["mcnemar"]
    checks.append(
        Check(
            name="verdict",
            status=verdict,
            detail="; ".join(res["reasons"])
            or f"pass: floor {res['floor']}"
            + (f", McNemar b={mc['b']} c={mc['c']} p={mc['p_value']:.3g}" if mc["b"] is not None else ""),
        )
    )
    numbers = {"seconds": t.seconds, "candidate_score": cand["score"]}
    if res["baseline"] is not None:
        numbers["baseline_score"] = res["baseline"]["score"]
    result = StageResult.from_checks(
        NAME, checks, numbers=numbers, evidence=evidence, logs=str(work), seconds=t.seconds
    )
    result.summary = (
        f"{res['verdict']}: candidate {cand['score']:.3f}"
        + (f" vs baseline {res['baseline']['score']:.3f}" if res["baseline"] else " (floor-only)")
        + (f" — {'; '.join(res['reasons'])}" if res["reasons"] else "")
    )
    return result
