"""`promote`: write a release's pins into an env of the GitOps repository, if policy allows.

- dev takes the release and evidence of a ci run (`ci` calls `run()` with them);
- staging/prod copy exactly the pins of the source env (default: the rung below).

One commit per promotion, with trailers and the evidence bundle; re-promoting the same
release is a no-op; a refusal lists every unmet rule of policies/promotion.rego.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.error import YAMLError

from pipeline.checks import trivy_operator
from pipeline.core.context import RunContext
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.gitops import promotion as pm
from pipeline.gitops import values_diff
from pipeline.gitops.argocd_pin import pin_follow_up
from pipeline.gitops.evidence import evidence_bundle, merge_stage_files, read_evidence, source_slo_keys, source_subject
from pipeline.gitops.promotion_policy import evaluate_policy, load_policy_data
from pipeline.gitops.release import Release
from pipeline.gitops.repo import GitOpsError, GitOpsRepo, Message, edit_yaml, resolve_remote, safe_url, work_dir_for
from pipeline.gitops.sync_windows import sync_windows

log = logging.getLogger(__name__)

NAME = "promote"
HELP = "Promote a release into dev|staging|prod of the GitOps repo (policy-checked, one commit with evidence)"


@dataclass
class PromoteOptions:
    to: str
    # dev only: the release a ci run produced, and its stage results (the evidence).
    release: Release | None = None
    evidence: Mapping[str, StageResult | Mapping[str, Any]] | None = None
    run_id: str | None = None
    source: str | None = None
    approvers: Sequence[str] = ()
    dry_run: bool = False
    gitops_repo: str | None = None
    policy_profile: str = "production"
    allow_unbuilt_images: bool = False
    # A VulnerabilityReports file, or `cluster[:CONTEXT]` (see parse_trivy_reports).
    trivy_reports: Path | TrivyCluster | None = None
    # The live path's lister (namespace, kube context) → reports; injectable for tests.
    trivy_lister: Callable[[str, str | None], list[dict[str, Any]]] | None = None
    extra_evidence: Sequence[Path] = ()
    actor: str | None = None
    now: dt.datetime | None = None
    attempts: int = 5
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrivyCluster:
    """`--trivy-reports cluster[:CONTEXT]`: read VulnerabilityReports live from the source env's namespace."""

    context: str | None = None


def parse_trivy_reports(value: str) -> Path | TrivyCluster:
    """`cluster` / `cluster:CONTEXT` → the live path; anything else is a file (`./cluster` for a file so named)."""
    if value == "cluster":
        return TrivyCluster()
    if value.startswith("cluster:"):
        context = value.removeprefix("cluster:")
        if not context:
            raise argparse.ArgumentTypeError("cluster:CONTEXT needs a kube context name after the colon")
        return TrivyCluster(context)
    return Path(value)


class Refused(Exception):
    def __init__(self, denials: list[str]) -> None:
        super().__init__("; ".join(denials))
        self.denials = denials


class DryRunDone(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, choices=pm.ENVS, help="target environment")
    parser.add_argument("--from", dest="source", choices=pm.ENVS, help="source env (default: the rung below)")
    parser.add_argument("--approve", action="append", default=[], metavar="NAME", help="an approver (repeat)")
    parser.add_argument("--dry-run", action="store_true", help="evaluate policy, change nothing")
    parser.add_argument("--gitops-repo", help="GitOps remote URL (default: $PIPELINE_GITOPS_REPO or the local one)")
    parser.add_argument(
        "--policy-profile",
        default="production",
        help="policy parameters: production (default) or an overlay such as `local` (recorded in the commit)",
    )
    parser.add_argument(
        "--allow-unbuilt-images", action="store_true", help="accept a release without registry images (recorded)"
    )
    parser.add_argument(
        "--trivy-reports",
        type=parse_trivy_reports,
        metavar="FILE|cluster[:CONTEXT]",
        help="trivy-operator VulnerabilityReports for the prod gate: a file (kubectl get vulnerabilityreports -o json)"
        " or `cluster[:CONTEXT]` to list them live in the source env's namespace",
    )
    parser.add_argument(
        "--evidence", dest="extra_evidence", action="append", default=[], type=Path, help="extra StageResult JSON"
    )
    parser.add_argument("--release-file", type=Path, help="dev only: a Release JSON (as written by `build`)")
    parser.add_argument(
        "--actor",
        help="override who promotes (recorded as an override); default: the CI identity ($GITHUB_ACTOR, "
        "$GITLAB_USER_LOGIN, ...), else $PIPELINE_ACTOR, else `git config user.email`, else the OS user",
    )


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    release = None
    if args.release_file:
        release = Release.model_validate_json(args.release_file.read_text())
    return run(
        PromoteOptions(
            to=args.to,
            release=release,
            source=args.source,
            approvers=args.approve,
            dry_run=args.dry_run,
            gitops_repo=args.gitops_repo,
            policy_profile=args.policy_profile,
            allow_unbuilt_images=args.allow_unbuilt_images,
            trivy_reports=args.trivy_reports,
            extra_evidence=args.extra_evidence,
            actor=args.actor,
        ),
        ctx,
    )


def load_reports(path: Path) -> list[dict[str, Any]]:
    """VulnerabilityReports from a file: a `kind: List` (kubectl -o json/yaml), a plain list, or one report."""
    from ruamel.yaml import YAML

    raw = YAML(typ="safe").load(path.read_text())
    if isinstance(raw, dict):
        items = raw.get("items", []) if raw.get("kind", "").endswith("List") or "items" in raw else [raw]
    else:
        items = list(raw or [])
    return [r for r in items if isinstance(r, dict)]


def _fetch_live(opts: PromoteOptions, where: TrivyCluster, source: str) -> tuple[list[dict[str, Any]], str]:
    namespace = trivy_operator.namespace_for(source)
    lister = opts.trivy_lister or trivy_operator.fetch_reports
    origin = f"cluster{':' + where.context if where.context else ''} namespace {namespace}"
    return lister(namespace, where.context), origin


def _trivy_operator(
    opts: PromoteOptions, rel: Release, now: dt.datetime, params: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """Input for the trivy-operator rule: from a file, or live from the cluster (source env's namespace).

    Required by data for some envs; also required whenever `--trivy-reports` is given (an
    unreadable source then refuses: never a silent pass).
    """
    required = bool(params.get("trivy_operator_required", {}).get(opts.to, False))
    requested = opts.trivy_reports is not None
    base = {"required": required, "requested": requested}
    if not required and not requested:
        return {**base, "passed": True, "evaluated": False, "detail": "not required for this env"}
    if opts.trivy_reports is None:
        return {
            **base,
            "passed": False,
            "evaluated": False,
            "detail": "no VulnerabilityReports given (--trivy-reports cluster[:CONTEXT] or FILE from "
            "`kubectl get vulnerabilityreports -o json`)",
        }
    if isinstance(opts.trivy_reports, TrivyCluster):
        try:
            reports, origin = _fetch_live(opts, opts.trivy_reports, source)
        except Exception as exc:  # no kubeconfig, unreachable API, RBAC: all refuse, with the reason
            namespace = trivy_operator.namespace_for(source)
            ctx_name = opts.trivy_reports.context or "current context / in-cluster"
            return {
                **base,
                "passed": False,
                "evaluated": False,
                "detail": f"cannot list VulnerabilityReports in namespace {namespace} (kube context {ctx_name}): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
            }
    else:
        try:
            reports, origin = load_reports(opts.trivy_reports), opts.trivy_reports.name
        except (OSError, YAMLError) as exc:
            return {
                **base,
                "passed": False,
                "evaluated": False,
                "detail": f"cannot read {opts.trivy_reports.name}: {exc}",
            }
    max_age = dt.timedelta(seconds=float(params.get("trivy_operator_max_age_seconds", 86400)))
    images = {rel.gateway_digest: "gateway", rel.vllm_digest: "vllm"}
    res = trivy_operator.gate(reports, list(images), now, max_age)
    if res.ok:
        detail = res.summary()
    else:
        detail = "; ".join(
            f"image <{images.get(v.digest, '?')}> {v.digest}: {v.reason}" for v in res.images if not v.ok
        )
    return {
        **base,
        "passed": res.ok,
        "evaluated": True,
        "source": origin,
        "detail": detail,
        "images": {
            images.get(v.digest, v.digest): {"ok": v.ok, "reason": v.reason, "reports": v.reports} for v in res.images
        },
    }


def _skipped(bundle: Mapping[str, Any], keys: Sequence[str]) -> dict[str, list[str]]:
    """Skipped checks of the gates the policy looked at (recorded when a profile accepts them)."""
    out: dict[str, list[str]] = {}
    for key in keys:
        gate = (bundle.get("gates") or {}).get(key) or {}
        if gate.get("skipped_checks"):
            out[key] = [str(c) for c in gate["skipped_checks"]]
    return out


def run(opts: PromoteOptions, ctx: RunContext) -> StageResult:
    target = opts.to
    if target not in pm.ENVS:
        raise ValueError(f"unknown env {target!r}")
    source = opts.source or pm.previous_rung(target)
    who = pm.actor_identity(opts.actor, ctx.repo_root)
    actor = who.name
    run_id = opts.run_id or ctx.run_dir.name
    # ci → dev: stages that record no subject of their own ran on the tree this ci run promotes from.
    fallback = (
        {**source_subject(ctx.repo_root, "source"), "recorded_by": "ci (the stage recorded no subject)"}
        if source == "ci" and opts.release is not None
        else None
    )
    checks: list[Check] = []
    outcome: dict[str, Any] = {}

    def mutate(repo: GitOpsRepo) -> Message | None:
        now = opts.now or pm.utcnow()
        outcome.clear()
        pm.validate_env_yaml(repo, target)
        if source == "ci":
            if opts.release is None:
                raise pm.PromotionError(
                    f"promote --to {target}: the release comes from a ci run (python -m pipeline ci)"
                )
            rel = opts.release
            bundle = evidence_bundle(rel, opts.evidence or {}, run_id, fallback)
            soak: dict[str, Any] = {"since": pm.iso(now), "elapsed_seconds": 0.0}
        else:
            pm.validate_env_yaml(repo, source)
            found = pm.read_release(repo, source)
            if found is None:
                raise pm.PromotionError(f"nothing is pinned in <{source}> yet: promote into {source} first")
            rel = found
            bundle = read_evidence(repo, source, rel.id) or {"release": {}, "gates": {}, "promotions": []}
            since = pm.pinned_since(repo, source)
            since_t = since.date if since else now
            soak = {"since": pm.iso(since_t), "elapsed_seconds": max(0.0, (now - since_t).total_seconds())}
        if opts.extra_evidence:
            merge_stage_files(bundle, opts.extra_evidence, rel, run_id, None if source == "ci" else source)
        current = pm.read_release(repo, target)
        outcome["release"] = rel
        if pm.same_pins(current, rel):
            outcome["noop"] = True
            return None

        data = load_policy_data(opts.policy_profile)
        params = data["promotion"]
        freeze = pm.read_freeze(repo, target)
        policy_input = {
            "kind": "PromotionRequest",
            "target": target,
            "source": source,
            "actor": actor,
            "actor_source": who.source,
            "release": rel.model_dump(mode="json"),
            "evidence": bundle,
            "soak": soak,
            "approvers": list(opts.approvers),
            "freeze": freeze.as_dict(),
            "sync_windows": sync_windows(repo, target, now),
            "trivy_operator": _trivy_operator(opts, rel, now, params, source),
            "allow_unbuilt_images": opts.allow_unbuilt_images,
        }
        denials = evaluate_policy(policy_input, data)
        outcome["input"] = policy_input
        if denials:
            raise Refused(denials)
        if opts.dry_run:
            raise DryRunDone()

        # Round-trip edit of exactly the pins; anything else moving aborts the promotion.
        edit_yaml(repo.file(pm.release_path(target)), pm.pin_updates(rel), pm.release_path(target))
        # Everything else the new revision ships (prod: branch values edits since the pin): shown and recorded.
        shipped = values_diff.shipped(repo, target)
        outcome["values_diff"] = shipped
        checked = [*params.get("required_gates", []), *source_slo_keys(bundle, source)]
        accepted = _skipped(bundle, checked)
        outcome["skipped_accepted"] = accepted
        record = {
            "from": source,
            "to": target,
            "at": pm.iso(now),
            "by": actor,
            "actor_source": who.source,
            "approvers": sorted({a.lower() for a in opts.approvers}),
            # Names given on the command line: not verified by the pipeline (docs/promotion.md).
            "approvals_source": "command line (--approve), unverified",
            # Skipped checks the policy profile let through for this target (empty in production for prod).
            "skipped_checks_accepted": accepted,
            "run_id": run_id,
            "policy_profile": params.get("profile", opts.policy_profile),
            "soak_seconds": round(float(soak["elapsed_seconds"])),
            "images_built": rel.images_built,
            "unbuilt_images_allowed": opts.allow_unbuilt_images and not rel.images_built,
            "trivy_operator": policy_input["trivy_operator"],
            "values_shipped": {"against": shipped["against"], "changes": shipped["changes"]},
        }
        bundle = {**bundle, "promotions": [*bundle.get("promotions", []), record]}
        ev_rel = pm.evidence_path(target, rel.id)
        pm.write_json(repo.file(ev_rel), bundle)
        outcome["evidence_path"] = ev_rel
        msg = _message(rel, source, target, who, opts, run_id, ev_rel, bundle, str(record["policy_profile"]), accepted)
        vals = {"against": shipped["against"], "changes": shipped["changes"]}
        msg.body += "\n\n" + values_diff.summary(vals)
        msg.trailers[-1:-1] = values_diff.trailers(vals)
        return msg

    with Timer() as t:
        remote = resolve_remote(opts.gitops_repo, ctx.repo_root)
        repo = GitOpsRepo(remote, work_dir_for(ctx.run_dir / "work"))
        try:
            tx = repo.transact(
                mutate, attempts=opts.attempts, follow_up=pin_follow_up(target, actor, f"promotion from {source}")
            )
        except Refused as exc:
            checks += [Check(name="policy", status=Status.FAILED, detail=d) for d in exc.denials]
            rel = outcome.get("release")
            summary = f"refused {rel.id if rel else '?'} {source} → {target}: {len(exc.denials)} unmet rule(s)"
            return StageResult.from_checks(NAME, checks, summary=summary, evidence=_ev(outcome, source, target))
        except DryRunDone:
            rel = outcome["release"]
            checks.append(Check(name="policy", status=Status.PASSED, detail="all promotion rules met"))
            return StageResult.from_checks(
                NAME,
                checks,
                summary=f"dry run: {rel.id} may go {source} → {target}",
                evidence=_ev(outcome, source, target),
            )
        except (GitOpsError, pm.PromotionError, OSError, json.JSONDecodeError) as exc:
            checks.append(Check(name="gitops", status=Status.FAILED, detail=f"{exc} (nothing pushed)"))
            return StageResult.from_checks(NAME, checks, summary=f"promotion to {target} failed: {exc}")
    rel = outcome["release"]
    if not tx.changed:
        checks.append(Check(name="idempotent", status=Status.PASSED, detail=f"{target} already runs {rel.id}"))
        return StageResult.from_checks(
            NAME, checks, summary=f"no-op: {target} already at {rel.id}", evidence={"target": target, "release": rel.id}
        )
    checks.append(Check(name="policy", status=Status.PASSED, detail="all promotion rules met"))
    checks.append(Check(name="push", status=Status.PASSED, detail=f"{tx.sha} after {tx.attempts} attempt(s)"))
    shipped = outcome.get("values_diff") or {}
    checks.append(
        Check(
            name="values",
            status=Status.PASSED,
            detail=values_diff.summary({"against": shipped.get("against", ""), "changes": shipped.get("changes", [])}),
        )
    )
    if tx.follow_up_sha:
        checks.append(
            Check(
                name="pin", status=Status.PASSED, detail=f"Argo CD <{target}> pinned to {tx.sha} ({tx.follow_up_sha})"
            )
        )
    return StageResult.from_checks(
        NAME,
        checks,
        summary=f"promoted {rel.id} {source} → {target} as {tx.sha[:12] if tx.sha else ''}",
        seconds=t.seconds,
        evidence={
            **_ev(outcome, source, target),
            "commit": tx.sha,
            "pin_commit": tx.follow_up_sha,
            "values_diff": outcome.get("values_diff"),
            "remote_is_local": opts.gitops_repo is None,
            "gitops_remote": safe_url(remote),
        },
    )


def _ev(outcome: Mapping[str, Any], source: str, target: str) -> dict[str, Any]:
    rel = outcome.get("release")
    return {
        "source": source,
        "target": target,
        "release": rel.model_dump(mode="json") if rel else None,
        "evidence_path": outcome.get("evidence_path"),
    }


def _message(
    rel: Release,
    source: str,
    target: str,
    who: pm.Actor,
    opts: PromoteOptions,
    run_id: str,
    ev_rel: str,
    bundle: Mapping[str, Any],
    profile: str,
    skipped_accepted: Mapping[str, list[str]],
) -> Message:
    actor = who.name
    gates = bundle.get("gates", {})
    body = "\n".join(
        [f"Promote release {rel.id} (commit {rel.commit[:12]}) from {source} to {target}.", "", "Gates:"]
        + [f"  {name:10} {g.get('status', '?'):8} {g.get('summary', '')}"[:200] for name, g in sorted(gates.items())]
    )
    trailers = [
        ("Promote-From", source),
        ("Promote-To", target),
        ("Release-Id", rel.id),
        ("Release-Commit", rel.commit),
        ("Chart-Version", rel.chart_version),
        ("Gateway-Digest", rel.gateway_digest),
        ("Vllm-Digest", rel.vllm_digest),
        ("Model-Revision", rel.model_revision),
        ("Images-Built", "true" if rel.images_built else "false (local executor)"),
        ("Run-Id", run_id),
        ("Promoted-By", actor),
        ("Actor-Source", who.source),
    ]
    trailers += [("Approved-By", a) for a in sorted({a.lower() for a in opts.approvers})]
    if opts.allow_unbuilt_images and not rel.images_built:
        trailers.append(("Unbuilt-Images-Allowed-By", actor))
    trailers += [
        ("Skipped-Checks-Accepted", f"{gate}: {', '.join(checks)}") for gate, checks in sorted(skipped_accepted.items())
    ]
    trailers += [("Policy-Profile", profile), ("Evidence", ev_rel)]
    return Message(subject=f"promote({target}): {rel.id} from {source}", body=body, trailers=trailers, author=actor)
