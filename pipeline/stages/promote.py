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

from pydantic import ValidationError

from pipeline.core.context import RunContext
from pipeline.core.exit_codes import UsageError
from pipeline.core.result import Check, StageResult, Status, Timer
from pipeline.gitops import canary_record, notify, promotion_model, promotion_trivy, values_diff
from pipeline.gitops import promotion as pm
from pipeline.gitops.argocd_pin import pin_follow_up
from pipeline.gitops.evidence import evidence_bundle, merge_stage_files, read_evidence, source_slo_keys, source_subject
from pipeline.gitops.promotion_policy import POLICY_DIR, evaluate_policy, load_policy_data
from pipeline.gitops.promotion_trivy import TrivyCluster, parse_trivy_reports
from pipeline.gitops.release import Release
from pipeline.gitops.repo import (
    GitOpsError,
    GitOpsRepo,
    Message,
    resolve_remote,
    safe_url,
    work_dir_for,
)
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
    # staging/prod: promote this release id, one the source env ran (its history), not its current one.
    release_id: str | None = None
    # Slack-compatible webhook told of the promotion (default: $PIPELINE_NOTIFY_URL).
    notify_url: str | None = None


class Refused(Exception):
    def __init__(self, denials: list[str]) -> None:
        super().__init__("; ".join(denials))
        self.denials = denials


class DryRunDone(Exception):
    pass


def policy_profiles() -> list[str]:
    """production (policies/promotion.data.json) and each overlay policies/promotion.<profile>.json."""
    overlays = sorted(
        p.name.removeprefix("promotion.").removesuffix(".json") for p in POLICY_DIR.glob("promotion.*.json")
    )
    return ["production", *(o for o in overlays if o != "data")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, choices=pm.ENVS, help="target environment")
    parser.add_argument("--from", dest="source", choices=pm.ENVS, help="source env (default: the rung below)")
    parser.add_argument("--approve", action="append", default=[], metavar="NAME", help="an approver (repeat)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="evaluate the policy and show the pin and values diff the promotion would push; push nothing",
    )
    parser.add_argument(
        "--gitops-repo", metavar="URL", help="GitOps remote URL (default: $PIPELINE_GITOPS_REPO or the local one)"
    )
    parser.add_argument(
        "--policy-profile",
        default="production",
        choices=policy_profiles(),
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
        "--evidence",
        dest="extra_evidence",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="extra StageResult JSON merged into the evidence (repeatable)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--release-file", type=Path, metavar="FILE", help="first env only: a Release JSON (as written by `build`)"
    )
    which.add_argument(
        "--release",
        dest="release_id",
        metavar="ID",
        help="promote this release, one the source env ran (see `history --env SOURCE`), instead of its current one",
    )
    parser.add_argument(
        "--actor",
        metavar="NAME",
        help="override who promotes (recorded as an override); default: the CI identity ($GITHUB_ACTOR, "
        "$GITLAB_USER_LOGIN, ...), else $PIPELINE_ACTOR, else `git config user.email`, else the OS user",
    )
    parser.add_argument(
        "--notify-url",
        metavar="URL",
        help=f"post a Slack-compatible notification of the promotion here (default: ${notify.ENV_VAR}; none if unset)",
    )


def read_only(args: argparse.Namespace) -> bool:
    """A dry run pushes nothing: its run directory and GitOps clone are temporary."""
    return bool(args.dry_run)


def run_from_args(args: argparse.Namespace, ctx: RunContext) -> StageResult:
    release = None
    if args.release_file:
        try:
            release = Release.model_validate_json(args.release_file.read_text())
        except (OSError, ValidationError) as exc:
            raise UsageError(f"--release-file {args.release_file}: {exc}") from exc
    if args.release_id and (args.source or pm.previous_rung(args.to)) == "ci":
        raise UsageError(
            f"--release picks a release another env ran; <{args.to}> takes releases from ci (--release-file)"
        )
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
            release_id=args.release_id,
            notify_url=args.notify_url,
        ),
        ctx,
    )


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
            rel, soak = pm.source_release(repo, source, opts.release_id, now)
            bundle = read_evidence(repo, source, rel.id) or {"release": {}, "gates": {}, "promotions": []}
        if opts.extra_evidence:
            merge_stage_files(bundle, opts.extra_evidence, rel, run_id, None if source == "ci" else source)
        current = pm.read_release(repo, target)
        outcome["release"] = rel
        if pm.same_pins(current, rel):
            outcome["noop"] = True
            return None

        data = load_policy_data(opts.policy_profile)
        params = data["promotion"]
        outcome["eligible_at"] = pm.soak_eligible_at(soak, float(params.get("soak_seconds", {}).get(target, 0)))
        # What the promotion pushes (shown by --dry-run, recorded otherwise): pins edited in this work copy only.
        outcome["pins_diff"] = pm.edit_pins(repo, target, rel)
        outcome["values_diff"] = values_diff.shipped(repo, target)
        # An env whose values enable the rollout takes the release through its canary steps: the plan, derived
        # from the values Argo CD renders, goes into environments/<env>/rollout.yaml in this same commit.
        outcome["rollout"] = _canary(repo, target, current, rel)
        # The model this promotion ships beside the values: pins, what it replaces, the eval that vouched.
        model = promotion_model.record(rel, current, bundle, promotion_model.env_model_id(repo, target))
        outcome["model"] = model
        outcome["model_diff"] = promotion_model.diff_lines(current, rel, model)
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
            "trivy_operator": promotion_trivy.gate_input(
                opts.trivy_reports, opts.trivy_lister, target, rel, now, params, source
            ),
            "allow_unbuilt_images": opts.allow_unbuilt_images,
            "target_model": promotion_model.target_input(current),
        }
        # The policy's model rule, backed by the same rule in Python: a model change no eval vouches for
        # is never pushed, even under a policy file that lost the rule.
        denials = evaluate_policy(policy_input, data) or promotion_model.denials(rel, current, bundle, source, target)
        outcome["input"] = policy_input
        if denials:
            raise Refused(denials)
        if opts.dry_run:
            raise DryRunDone()

        # Everything else the new revision ships (prod: branch values edits since the pin): shown and recorded.
        shipped = outcome["values_diff"]
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
            "model": outcome["model"],
        }
        bundle = {**bundle, "promotions": [*bundle.get("promotions", []), record]}
        ev_rel = pm.evidence_path(target, rel.id)
        pm.write_json(repo.file(ev_rel), bundle)
        outcome["evidence_path"] = ev_rel
        canary = outcome["rollout"]
        if canary is not None:
            canary_record.write(
                repo,
                target,
                canary_record.record(canary["state"], canary["from"], canary["to"], pm.iso(now), actor, canary["plan"]),
            )
        msg = _message(rel, source, target, who, opts, run_id, ev_rel, bundle, str(record["policy_profile"]), accepted)
        vals = {"against": shipped["against"], "changes": shipped["changes"]}
        msg.body += (
            "\n\n" + values_diff.summary(vals) + "\n\nModel:\n" + "\n".join(f"  {m}" for m in outcome["model_diff"])
        )
        msg.trailers[-1:-1] = values_diff.trailers(vals)
        if canary is not None:
            msg.body += f"\n\nRollout ({canary['path']}):\n  {_canary_detail(canary, target)}"
            msg.trailers[-1:-1] = [("Rollout-State", canary["state"]), ("Rollout-Steps", canary["steps"])]
        return msg

    with Timer() as t:
        if opts.dry_run:
            remote = pm.remote_for_reading(opts.gitops_repo, ctx.repo_root, ctx.run_dir)
        else:
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
            if outcome.get("eligible_at"):
                # When waiting is all it takes for the soak rule: say when (other rules may still refuse).
                checks.append(Check(name="soak", status=Status.FAILED, detail=_soak_detail(outcome, source, target)))
                summary += f"; soak complete at {outcome['eligible_at']}"
            checks += _diff_checks(outcome) if opts.dry_run else []
            return StageResult.from_checks(NAME, checks, summary=summary, evidence=_ev(outcome, source, target))
        except DryRunDone:
            rel = outcome["release"]
            checks.append(Check(name="policy", status=Status.PASSED, detail="all promotion rules met"))
            checks += _diff_checks(outcome)
            return StageResult.from_checks(
                NAME,
                checks,
                summary=f"dry run: {rel.id} may go {source} → {target}; nothing pushed",
                evidence=_ev(outcome, source, target),
            )
        except pm.PromotionError as exc:
            # A verdict on the request against the repository (nothing pinned in the source, release not run there).
            checks.append(Check(name="promotion", status=Status.FAILED, detail=f"{exc} (nothing pushed)"))
            return StageResult.from_checks(NAME, checks, summary=f"promotion to {target} refused: {exc}")
        except (GitOpsError, OSError, json.JSONDecodeError) as exc:
            # No verdict reached (remote unreachable, broken YAML/JSON in the repo): exit code 3.
            checks.append(Check(name="gitops", status=Status.FAILED, detail=f"{exc} (nothing pushed)"))
            return StageResult.from_checks(NAME, checks, summary=f"promotion to {target} failed: {exc}", error=True)
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
    checks.append(Check(name="model", status=Status.PASSED, detail="\n".join(outcome.get("model_diff") or [])))
    canary = outcome.get("rollout")
    if canary is not None:
        checks.append(Check(name="rollout", status=Status.PASSED, detail=_canary_detail(canary, target)))
    if tx.follow_up_sha:
        checks.append(
            Check(
                name="pin", status=Status.PASSED, detail=f"Argo CD <{target}> pinned to {tx.sha} ({tx.follow_up_sha})"
            )
        )
    summary = f"promoted {rel.id} {source} → {target} as {tx.sha[:12] if tx.sha else ''}"
    if canary is not None:
        summary += "; " + _canary_summary(canary)
    notice = notify.notify(
        notify.resolve_url(opts.notify_url),
        f"{rel.id} promoted {source} → {target}",
        [
            f"*Release* {rel.id} (commit {rel.commit[:12]}), model {rel.model_revision}"
            + (f" content {rel.model_content_digest}" if rel.model_content_digest else ""),
            f"*Approved by*: {', '.join(sorted({a.lower() for a in opts.approvers})) or 'no approvers required'}",
            values_diff.summary(shipped),
        ],
        {"by": actor, "commit": (tx.sha or "")[:12], "evidence": outcome.get("evidence_path")},
    )
    if notice is not None:
        ctx.console.print(notice.line())
    return StageResult.from_checks(
        NAME,
        checks,
        summary=summary,
        seconds=t.seconds,
        evidence={
            **_ev(outcome, source, target),
            "commit": tx.sha,
            "pin_commit": tx.follow_up_sha,
            "values_diff": outcome.get("values_diff"),
            "remote_is_local": opts.gitops_repo is None,
            "gitops_remote": safe_url(remote),
            "notification": notice.as_dict() if notice else None,
        },
    )


def _ev(outcome: Mapping[str, Any], source: str, target: str) -> dict[str, Any]:
    rel = outcome.get("release")
    return {
        "source": source,
        "target": target,
        "release": rel.model_dump(mode="json") if rel else None,
        "evidence_path": outcome.get("evidence_path"),
        "pins_diff": outcome.get("pins_diff"),
        "values_diff": outcome.get("values_diff"),
        "eligible_at": outcome.get("eligible_at"),
        "model": outcome.get("model"),
        "model_diff": outcome.get("model_diff"),
        # None: the env switches all at once (a Deployment); else the canary it goes through (rollout.yaml).
        "rollout": outcome.get("rollout"),
    }


def _soak_detail(outcome: Mapping[str, Any], source: str, target: str) -> str:
    rel = outcome.get("release")
    soak = (outcome.get("input") or {}).get("soak") or {}
    return (
        f"release <{rel.id if rel else '?'}> has soaked {round(float(soak.get('elapsed_seconds', 0)))}s in <{source}> "
        f"since {soak.get('since', '?')}: eligible for <{target}> at {outcome['eligible_at']} as far as soak goes"
    )


def _diff_checks(outcome: Mapping[str, Any]) -> list[Check]:
    """The pin and values diff as checks (the human view lists each change on its own line)."""
    pins = list(outcome.get("pins_diff") or [])
    shipped = outcome.get("values_diff") or {}
    values = list(shipped.get("changes") or [])
    dropped = list(shipped.get("branch_changes") or [])
    against = str(shipped.get("against", ""))[:12]
    out = [Check(name="pins", status=Status.PASSED, detail="\n".join(pins) or "no pin changes")]
    detail = "\n".join(values) or "no values change"
    if dropped:
        detail += "\nbranch edits undone:\n" + "\n".join(dropped)
    out.append(Check(name="values", status=Status.PASSED, detail=f"vs {against}:\n{detail}" if against else detail))
    if outcome.get("model_diff"):
        out.append(Check(name="model", status=Status.PASSED, detail="\n".join(outcome["model_diff"])))
    if outcome.get("rollout"):
        out.append(Check(name="rollout", status=Status.PASSED, detail=_canary_detail(outcome["rollout"], "")))
    return out


def _canary(repo: GitOpsRepo, target: str, current: Release | None, rel: Release) -> dict[str, Any] | None:
    """The canary this promotion starts in `target` (None: its values do not enable the rollout)."""
    try:
        plan = canary_record.plan(repo.path, target, rel.id)
    except canary_record.RolloutPlanError as exc:
        raise pm.PromotionError(f"canary plan of <{target}>: {exc}") from exc
    if plan is None:
        return None
    return {
        # No stable release yet: Argo Rollouts deploys the first one at once (rollout/sync.go
        # shouldFullPromote: "Initial deploy"); every later one goes through the steps.
        "state": canary_record.PROGRESSING if current is not None else canary_record.INITIAL,
        "from": current.id if current is not None else None,
        "to": rel.id,
        "mode": "canary" if current is not None else "all-at-once (initial deploy)",
        "steps": canary_record.steps_line(plan["steps"]),
        "path": canary_record.rollout_path(target),
        "plan": plan,
    }


def _canary_summary(canary: Mapping[str, Any]) -> str:
    if canary["state"] == canary_record.INITIAL:
        return "first release of a canary env: deployed at once (no stable release to compare with)"
    return f"canary: {canary['steps']}"


def _canary_detail(canary: Mapping[str, Any], target: str) -> str:
    where = f"<{target}>" if target else "the env"
    metrics = ", ".join(m["name"] for m in canary["plan"]["analysis"]["metrics"])
    if canary["state"] == canary_record.INITIAL:
        return (
            f"{where} has no stable release: Argo Rollouts deploys {canary['to']} at once (initial deploy); "
            f"later releases go through {canary['steps']} (state {canary['state']} in {canary['path']})"
        )
    return (
        f"{where} goes through the canary, not all at once: {canary['from']} → {canary['to']} via {canary['steps']}; "
        f"each analysis step runs {canary['plan']['analysis']['template']} ({metrics}) and a failed one aborts "
        f"(state {canary['state']} in {canary['path']})"
    )


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
    ]
    if rel.model_content_digest:
        trailers += [("Model-Digest", rel.model_digest or "-"), ("Model-Content-Digest", rel.model_content_digest)]
    trailers += [
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
