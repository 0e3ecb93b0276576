"""Roll an env back: revert its bad promotion(s) and freeze it, in ONE commit.

Never a history rewrite: the bad promotion(s) are reverted (`git revert --no-commit`), the
freeze file is set, and both land in one commit, so a crash at any point leaves the remote
either untouched or fully rolled back. The evidence files are kept (history of what ran).
The `rollback` stage and the rollback controller call `execute()`; the controller passes a
guard that re-checks de-duplication and rate limits on every fresh base.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.gitops import canary_record, values_diff
from pipeline.gitops import promotion as pm
from pipeline.gitops.argocd_pin import APP_FILES, pin_follow_up
from pipeline.gitops.release import Release
from pipeline.gitops.repo import Commit, GitOpsError, GitOpsRepo, Message, edit_yaml, git

# Returns a reason to do nothing (already handled, rate limited, ...) or None to proceed.
Guard = Callable[[GitOpsRepo, list[Commit]], str | None]


class NothingToRollBack(pm.PromotionError):
    """No earlier good release exists for the env."""


@dataclass
class RollbackOptions:
    env: str
    to: str | None = None
    reason: str = ""
    actor: str | None = None
    gitops_repo: str | None = None
    trigger: str = "manual"
    # Extra trailers (alert name, fingerprint, incident key) written by the controller.
    trailers: list[tuple[str, str]] = field(default_factory=list)
    guard: Guard | None = None
    # The env's Rollout as the caller saw it live (paused, aborted, ...; None: not known), recorded in git.
    rollout_observed: str | None = None
    now: dt.datetime | None = None
    attempts: int = 5


@dataclass
class RollbackOutcome:
    status: str  # rolled_back | noop | refused | error
    detail: str
    sha: str | None = None
    # The commit that moved the Argo CD pin of a pinned env (prod) to `sha`, same push.
    pin_sha: str | None = None
    restored: str | None = None
    reverted: str | None = None
    attempts: int = 0
    # The values diff shipped (values_diff.shipped): against, changes, branch_changes.
    values: dict[str, Any] = field(default_factory=dict)


def unreverted_promotions(history: list[Commit], env: str) -> list[Commit]:
    """Promotions into `env` (newest first) that no later rollback has reverted."""
    reverted = {sha for c in history for v in c.trailer_all("Reverts") for sha in v.split()}
    return [c for c in history if c.trailer("Promote-To") == env and c.sha not in reverted]


def plan(repo: GitOpsRepo, env: str, to: str | None, history: list[Commit]) -> list[Commit]:
    """The promotion commits to revert, newest first."""
    promos = unreverted_promotions(history, env)
    if to is None:
        if not promos:
            raise NothingToRollBack(f"nothing to roll back in <{env}>: no promotion left to revert")
        return promos[:1]
    target = git("rev-parse", "--verify", f"{to}^{{commit}}", cwd=repo.path, check=False).strip()
    if not target:
        raise pm.PromotionError(f"--to {to}: no such commit in the GitOps repository")
    if subprocess.run(["git", "merge-base", "--is-ancestor", target, "HEAD"], cwd=repo.path, check=False).returncode:
        raise pm.PromotionError(f"--to {to}: not on the GitOps branch")
    newer = set(git("rev-list", f"{target}..HEAD", "--", pm.release_path(env), cwd=repo.path).split())
    chosen = [c for c in promos if c.sha in newer]
    if not chosen:
        raise NothingToRollBack(f"<{env}> already runs what {to[:12]} pinned: nothing to revert")
    return chosen


def restore_point(repo: GitOpsRepo, chosen: list[Commit], history: list[Commit]) -> str:
    """The commit whose env files the rollback restores: the last change of the env's pins before
    the oldest reverted promotion (the restored release's promotion or rollback), as it was then."""
    oldest = chosen[-1]
    older = history[[c.sha for c in history].index(oldest.sha) + 1 :]
    return older[0].sha if older else git("rev-parse", f"{oldest.sha}^", cwd=repo.path).strip()


def restore_env_files(repo: GitOpsRepo, env: str, rev: str) -> None:
    """Make the env's Argo CD inputs (values.yaml, release.yaml) exactly what they were at `rev`."""
    for name in APP_FILES:
        rel = f"environments/{env}/{name}"
        if _exists(repo, rev, rel):
            git("checkout", rev, "--", rel, cwd=repo.path)
        else:
            git("rm", "-q", "--ignore-unmatch", "--", rel, cwd=repo.path)


def _model_line(bad: Release | None, restored: Release) -> str:
    """The model the rollback restores, by content digest (a model-only rollback changes only this)."""
    old = bad.model_content_digest if bad else None
    new = restored.model_content_digest
    if old == new:
        return f"Model: unchanged (content digest {new or 'none'}, revision {restored.model_revision})."
    return f"Model: content digest {old or 'none'} → {new or 'none'} (revision {restored.model_revision})."


def _exists(repo: GitOpsRepo, rev: str, rel: str) -> bool:
    return bool(git("ls-tree", "--name-only", rev, "--", rel, cwd=repo.path, check=False).strip())


def execute(opts: RollbackOptions, repo: GitOpsRepo) -> RollbackOutcome:
    env = opts.env
    actor = pm.actor_name(opts.actor)
    info: dict[str, Any] = {}

    def mutate(r: GitOpsRepo) -> Message | None:
        info.clear()
        now = opts.now or pm.utcnow()
        pm.validate_env_yaml(r, env)
        history = r.log(pm.release_path(env))
        if opts.guard is not None:
            why = opts.guard(r, history)
            if why:
                info["noop"] = why
                return None
        bad = pm.read_release(r, env)
        canary_before = canary_record.read(r, env)
        chosen = plan(r, env, opts.to, history)
        r.revert_no_commit([c.sha for c in chosen])
        # Keep the evidence of what ran: a rollback changes pins and freeze state only.
        git("checkout", "HEAD", "--", f"environments/{env}/evidence", cwd=r.path, check=False)
        # Exactly the restored release's pins AND values as they were at its promotion: nothing
        # else from the branch (an unpromoted hand edit is undone, and listed).
        point = restore_point(r, chosen, history)
        restore_env_files(r, env, point)
        shipped = values_diff.shipped(r, env)
        restored = pm.read_release(r, env)
        if restored is None:
            raise NothingToRollBack(
                f"nothing to roll back to in <{env}>: reverting {chosen[-1].sha[:12]} leaves no valid release pinned"
            )
        reason = opts.reason or f"manual rollback by {actor}"
        edit_yaml(
            r.file(pm.freeze_path(env)),
            {("frozen",): True, ("since",): pm.iso(now), ("by",): actor, ("reason",): " ".join(reason.split())},
            pm.freeze_path(env),
        )
        info.update(restored=restored.id, reverted=bad.id if bad else "?", values=shipped, point=point)
        canary_trailers: list[tuple[str, str]] = []
        if canary_before is not None:
            # The env runs a Rollout: its record says the release moved back, and what the Rollout was doing.
            # The reverted spec is the stable ReplicaSet's template again, so Argo Rollouts goes straight back
            # to it without steps (argo-rollouts rollout/canary.go, "SkipSteps: Rollback to stable ReplicaSets").
            canary_record.write(
                r,
                env,
                canary_record.record(
                    canary_record.ROLLED_BACK,
                    info["reverted"],
                    restored.id,
                    pm.iso(now),
                    actor,
                    None,
                    observed=opts.rollout_observed,
                    reverts=[c.sha for c in chosen],
                    steps="none: back to the stable ReplicaSet at once",
                ),
            )
            canary_trailers = [("Rollout-State", canary_record.ROLLED_BACK)]
            if opts.rollout_observed:
                canary_trailers.append(("Rollout-Observed", opts.rollout_observed))
        body = "\n".join(
            [f"This reverts commit {c.sha}." for c in chosen]
            + [
                "",
                f"Reason: {reason}",
                "",
                f"environments/{env}/{{values,release}}.yaml restored as of {point}.",
                values_diff.summary(shipped),
                _model_line(bad, restored),
                "",
                f"{env} stays frozen until `python -m pipeline unfreeze --env {env} --actor NAME`.",
            ]
        )
        trailers = [
            ("Rollback-Env", env),
            ("Reverts", " ".join(c.sha for c in chosen)),
            ("Reverted-Release-Id", info["reverted"]),
            ("Release-Id", restored.id),
            ("Gateway-Digest", restored.gateway_digest),
            ("Vllm-Digest", restored.vllm_digest),
            ("Model-Revision", restored.model_revision),
            # The model artifact the env serves again (byte-equal pins: restored from `point`).
            *(
                [("Model-Digest", str(restored.model_digest)), ("Model-Content-Digest", restored.model_content_digest)]
                if restored.model_content_digest
                else []
            ),
            ("Rollback-Reason", reason),
            ("Rollback-Trigger", opts.trigger),
            ("Rolled-Back-By", actor),
            ("Restored-From", point),
            *values_diff.trailers(shipped),
            *canary_trailers,
            *opts.trailers,
            ("Frozen", "true"),
        ]
        return Message(
            subject=f"rollback({env}): {info['reverted']} → {restored.id}", body=body, trailers=trailers, author=actor
        )

    try:
        tx = repo.transact(
            mutate, attempts=opts.attempts, follow_up=pin_follow_up(env, actor, f"rollback ({opts.trigger})")
        )
    except NothingToRollBack as exc:
        return RollbackOutcome("refused", str(exc))
    except (GitOpsError, pm.PromotionError, OSError) as exc:
        return RollbackOutcome("error", f"{exc} (nothing pushed)")
    if not tx.changed:
        return RollbackOutcome("noop", str(info.get("noop", "nothing changed")), attempts=tx.attempts)
    return RollbackOutcome(
        "rolled_back",
        f"rolled back <{env}> {info['reverted']} → {info['restored']} as {tx.sha[:12] if tx.sha else ''}; env frozen"
        + (f"; Argo CD pin moved to it ({tx.follow_up_sha[:12]})" if tx.follow_up_sha else ""),
        sha=tx.sha,
        pin_sha=tx.follow_up_sha,
        restored=info["restored"],
        reverted=info["reverted"],
        attempts=tx.attempts,
        values=info["values"],
    )
