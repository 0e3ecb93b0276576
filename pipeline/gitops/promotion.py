"""Shared model of the GitOps environments: envs and their files, actors, pins, freeze state, history.

Used by `promote`, `rollback`, `unfreeze`, `status` and the rollback controller, so they
all read git the same way. Layout of one env in the GitOps repository:

    environments/<env>/release.yaml               the pins (pipeline.gitops.release.Release.to_values)
    environments/<env>/freeze.yaml                frozen: true|false (+ since, by, reason)
    environments/<env>/evidence/<release-id>.json gate results + promotion records for that release
    environments/<env>/rollout.yaml               canary envs: the plan + state of the last change (pipeline.gitops.canary_record)

Commit trailers (see docs/promotion.md) make every change answerable from `git log` alone.
Beside this module: `evidence` (gate subjects, bundles, attached gates), `promotion_policy`
(policies/promotion.rego), `sync_windows` (Argo CD windows), `argocd_pin` (the prod pin).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.core.platform import repo_platform
from pipeline.gitops.release import OPTIONAL_PINS, Release
from pipeline.gitops.repo import (
    ENV_VAR,
    REMOVE,
    Commit,
    GitOpsError,
    GitOpsRepo,
    Message,
    edit_yaml,
    ensure_local_remote,
    flatten,
    git,
    load_yaml_text,
    resolve_remote,
)
from pipeline.gitops.values_diff import diff as diff_values
from pipeline.runtime.tools import REPO_ROOT

# Promotion order, from platform.yaml: the first env takes releases from CI, each next one from the one before.
ENVS: tuple[str, ...] = repo_platform().env_names
# Gates whose results a release must carry (names of the pipeline stages that produce them).
GATE_STAGES = ("test", "scan", "smoke", "loadtest")
# The env of ci's own env-specific gates (its loadtest runs loadtests/slo/dev.yaml).
CI_GATE_ENV = ENVS[0]


class PromotionError(RuntimeError):
    """A promotion/rollback cannot proceed; the message says why."""


def release_path(env: str) -> str:
    return f"environments/{env}/release.yaml"


def freeze_path(env: str) -> str:
    return f"environments/{env}/freeze.yaml"


def evidence_path(env: str, release_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", release_id)
    return f"environments/{env}/evidence/{safe}.json"


def previous_rung(env: str) -> str:
    idx = ENVS.index(env)
    return "ci" if idx == 0 else ENVS[idx - 1]


# CI systems' own record of who triggered the run, most trusted first: (variable, what it is).
CI_IDENTITY_VARS = (
    ("GITHUB_ACTOR", "GitHub Actions (GITHUB_ACTOR)"),
    ("GITLAB_USER_LOGIN", "GitLab CI (GITLAB_USER_LOGIN)"),
    ("CI_COMMIT_AUTHOR", "GitLab CI (CI_COMMIT_AUTHOR)"),
    ("BUILDKITE_BUILD_CREATOR_EMAIL", "Buildkite (BUILDKITE_BUILD_CREATOR_EMAIL)"),
)


@dataclass(frozen=True)
class Actor:
    """Who acts, and where that name came from (recorded as `Actor-Source:`)."""

    name: str
    source: str

    @property
    def overridden(self) -> bool:
        return self.source.startswith("override")


def _git_user_email(cwd: Path) -> str:
    try:
        return git("config", "--get", "user.email", cwd=cwd, check=False).strip()
    except OSError:
        return ""


def actor_identity(explicit: str | None = None, cwd: Path | None = None) -> Actor:
    """Who acts: the CI identity, else $PIPELINE_ACTOR, else `git config user.email`, else the OS user.

    `explicit` (`--actor`/`--by`) wins but is recorded as an override, so a reader of the commit
    knows the name was asserted, not derived. None of these is authenticated: see docs/promotion.md.
    """
    if explicit:
        return Actor(explicit, "override (--actor)")
    for var, what in CI_IDENTITY_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return Actor(value, what)
    env = os.environ.get("PIPELINE_ACTOR", "").strip()
    if env:
        return Actor(env, "override ($PIPELINE_ACTOR)")
    email = _git_user_email(cwd or REPO_ROOT)
    if email:
        return Actor(email, "git config user.email")
    try:
        return Actor(getpass.getuser(), "OS user")
    except (KeyError, OSError):
        return Actor("unknown", "none found")


def actor_name(explicit: str | None = None) -> str:
    """The name of `actor_identity(explicit)`."""
    return actor_identity(explicit).name


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- reading an env


def validate_env_yaml(repo: GitOpsRepo, env: str) -> None:
    """Every YAML file of the env must parse (Argo CD would fail on it anyway): refuse early."""
    env_dir = repo.file(f"environments/{env}")
    if not env_dir.is_dir():
        raise GitOpsError(f"environments/{env}/ does not exist in the GitOps repository")
    for path in sorted(env_dir.rglob("*.y*ml")):
        rel = str(path.relative_to(repo.path))
        load_yaml_text(path.read_text(), rel)


def read_release(repo: GitOpsRepo, env: str) -> Release | None:
    """The pinned release of `env`, or None if nothing valid is pinned yet (placeholders)."""
    path = repo.file(release_path(env))
    if not path.exists():
        return None
    values = load_yaml_text(path.read_text(), release_path(env)) or {}
    if not isinstance(values, Mapping):
        raise GitOpsError(f"{release_path(env)}: expected a mapping at the top level")
    try:
        rel = Release.from_values(json.loads(json.dumps(values, default=str)))
    except ValidationError:
        return None
    # The seed files carry a syntactically valid placeholder (all-zero commit): nothing promoted yet.
    if not rel.id or set(rel.commit) <= {"0"}:
        return None
    return rel


def same_pins(a: Release | None, b: Release | None) -> bool:
    if a is None or b is None:
        return False
    keys = (
        "id",
        "gateway_digest",
        "vllm_digest",
        "model_revision",
        "model_digest",
        "model_content_digest",
        "chart_version",
    )
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def pin_updates(rel: Release) -> dict[tuple[str, ...], Any]:
    """Exactly the keys a promotion may change in release.yaml (optional pins it lacks: removed)."""
    updates: dict[tuple[str, ...], Any] = dict.fromkeys(OPTIONAL_PINS, REMOVE)
    updates.update(flatten(rel.to_values()))
    return updates


@dataclass(frozen=True)
class Freeze:
    frozen: bool
    since: str = ""
    by: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "since": self.since, "by": self.by, "reason": self.reason}


def read_freeze(repo: GitOpsRepo, env: str) -> Freeze:
    path = repo.file(freeze_path(env))
    if not path.exists():
        return Freeze(False)
    doc = load_yaml_text(path.read_text(), freeze_path(env)) or {}
    return Freeze(
        frozen=bool(doc.get("frozen", False)),
        since=str(doc.get("since") or ""),
        by=str(doc.get("by") or ""),
        reason=str(doc.get("reason") or ""),
    )


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def pinned_since(repo: GitOpsRepo, env: str) -> Commit | None:
    """The commit that last changed the env's pins (promotion or rollback)."""
    commits = repo.log(release_path(env), limit=1)
    return commits[0] if commits else None


def remote_for_reading(url: str | None, repo_root: Path, scratch: Path) -> str:
    """The remote a read-only verb reads: as `resolve_remote`, except that it never creates the embedded
    default (`.gitops/` in the tree): when that does not exist yet, a throwaway copy seeded from the same
    files under `scratch` (the verb's temporary run directory) answers the same."""
    if url or os.environ.get(ENV_VAR):
        return resolve_remote(url, repo_root)
    default = repo_root / ".gitops" / "gitops.git"
    if (default / "HEAD").exists():
        return str(default)
    return str(ensure_local_remote(scratch / "seed" / "gitops.git", repo_root))


def release_at(repo: GitOpsRepo, rev: str, env: str) -> Release | None:
    """The release `env` pinned at commit `rev` (None: nothing valid pinned there)."""
    text = git("show", f"{rev}:{release_path(env)}", cwd=repo.path, check=False)
    if not text.strip():
        return None
    values = load_yaml_text(text, f"{rev[:12]}:{release_path(env)}") or {}
    try:
        rel = Release.from_values(json.loads(json.dumps(values, default=str)))
    except ValidationError:
        return None
    return None if not rel.id or set(rel.commit) <= {"0"} else rel


@dataclass(frozen=True)
class Stint:
    """One period a release was pinned in an env: from `start` (the commit that pinned it) to `end`."""

    release: Release
    start: Commit
    # The commit that replaced it (None: it is still pinned).
    end: Commit | None

    @property
    def rolled_back(self) -> bool:
        return self.end is not None and bool(self.end.trailer("Rollback-Env"))

    def seconds(self, now: dt.datetime) -> float:
        until = self.end.date if self.end is not None else now
        return max(0.0, (until - self.start.date).total_seconds())


def last_stint(repo: GitOpsRepo, env: str, release_id: str) -> Stint | None:
    """The most recent period `env` ran `release_id`, from the history of its release.yaml (None: never)."""
    history = repo.log(release_path(env))  # newest first
    for i, commit in enumerate(history):
        rel = release_at(repo, commit.sha, env)
        if rel is None or rel.id != release_id:
            continue
        # Walk back to the first commit of this stint (consecutive commits pinning the same id).
        start = i
        while start + 1 < len(history):
            older = release_at(repo, history[start + 1].sha, env)
            if older is None or older.id != release_id:
                break
            start += 1
        return Stint(rel, history[start], history[i - 1] if i > 0 else None)
    return None


def ran_releases(repo: GitOpsRepo, env: str) -> list[str]:
    """Release ids `env` has pinned, newest first, each once (for an error naming the valid choices)."""
    seen: list[str] = []
    for commit in repo.log(release_path(env)):
        rel = release_at(repo, commit.sha, env)
        if rel is not None and rel.id not in seen:
            seen.append(rel.id)
    return seen


def freeze_updates(frozen: bool, actor: str, reason: str, now: dt.datetime) -> dict[tuple[str, ...], Any]:
    """The freeze.yaml keys a freeze, an unfreeze and a rollback write."""
    return {("frozen",): frozen, ("since",): iso(now), ("by",): actor, ("reason",): " ".join(reason.split())}


def set_freeze(repo: GitOpsRepo, env: str, frozen: bool, who: Actor, reason: str) -> tuple[str | None, Freeze]:
    """Commit freeze.yaml `frozen` for `env` (sha), or None when it already is; and the state before."""
    box: dict[str, Freeze] = {}

    def mutate(r: GitOpsRepo) -> Message | None:
        validate_env_yaml(r, env)
        state = box["before"] = read_freeze(r, env)
        if state.frozen == frozen:
            return None
        edit_yaml(r.file(freeze_path(env)), freeze_updates(frozen, who.name, reason, utcnow()), freeze_path(env))
        if frozen:
            return Message(
                subject=f"freeze({env}): by {who.name}",
                body=f"Reason: {reason}\n\nEvery promotion into {env} is refused until "
                f"`python -m pipeline unfreeze --env {env} --actor NAME`.",
                trailers=[
                    ("Freeze-Env", env),
                    ("Frozen-By", who.name),
                    ("Actor-Source", who.source),
                    ("Freeze-Reason", reason),
                    ("Frozen", "true"),
                ],
                author=who.name,
            )
        return Message(
            subject=f"unfreeze({env}): by {who.name}",
            body=f"Frozen since {state.since} by {state.by}: {state.reason}",
            trailers=[
                ("Unfreeze-Env", env),
                ("Unfrozen-By", who.name),
                ("Actor-Source", who.source),
                ("Unfreeze-Reason", reason or "-"),
            ],
            author=who.name,
        )

    return repo.transact(mutate).sha, box["before"]


# ---------------------------------------------------------------- what a promotion takes and pushes


def source_release(
    repo: GitOpsRepo, source: str, release_id: str | None, now: dt.datetime
) -> tuple[Release, dict[str, Any]]:
    """The release to promote out of `source` and how long it soaked there: its current one, or `release_id`
    (a release it ran: soak = its last stint there; one a rollback took out of `source` is refused)."""
    if release_id is None:
        found = read_release(repo, source)
        if found is None:
            raise PromotionError(f"nothing is pinned in <{source}> yet: promote into {source} first")
        since = pinned_since(repo, source)
        since_t = since.date if since else now
        return found, {"since": iso(since_t), "elapsed_seconds": max(0.0, (now - since_t).total_seconds())}
    stint = last_stint(repo, source, release_id)
    if stint is None:
        ran = ran_releases(repo, source)
        raise PromotionError(
            f"--release {release_id}: <{source}> never ran it; it ran: {', '.join(ran) if ran else 'nothing yet'}"
        )
    if stint.rolled_back and stint.end is not None:
        raise PromotionError(
            f"--release {release_id} was rolled back out of <{source}> by {stint.end.sha[:12]} "
            f"({stint.end.trailer('Rollback-Reason') or 'no reason recorded'}): not promotable from there"
        )
    return stint.release, {
        "since": iso(stint.start.date),
        "elapsed_seconds": stint.seconds(now),
        "until": iso(stint.end.date) if stint.end is not None else None,
    }


def soak_eligible_at(soak: Mapping[str, Any], required: float) -> str | None:
    """When the soak rule will pass (ISO time), or None when it passes already. A release no longer
    pinned in the source soaks no more: it never becomes eligible by waiting."""
    elapsed = float(soak["elapsed_seconds"])
    if required <= 0 or elapsed >= required or soak.get("until"):
        return None
    since = dt.datetime.fromisoformat(str(soak["since"]).replace("Z", "+00:00"))
    return iso(since + dt.timedelta(seconds=required))


def edit_pins(repo: GitOpsRepo, env: str, rel: Release) -> list[str]:
    """Edit exactly the pins of `env` in the work copy (round trip; anything else moving aborts) and
    return the change, one line per pin: `release.id: "old" → "new"`."""
    path, where = repo.file(release_path(env)), release_path(env)
    before = load_yaml_text(path.read_text(), where) if path.exists() else {}
    edit_yaml(path, pin_updates(rel), where)
    after = load_yaml_text(path.read_text(), where)
    return diff_values(_plain_doc(before), _plain_doc(after))


def _plain_doc(doc: Any) -> dict[str, Any]:
    return dict(json.loads(json.dumps(doc or {}, default=str)))


# ---------------------------------------------------------------- an env's history

# Kinds of change in an env's history, by the trailer that marks them (docs/promotion.md, docs/rollback.md).
HISTORY_KINDS = (
    ("promote", "Promote-To"),
    ("rollback", "Rollback-Env"),
    ("freeze", "Freeze-Env"),
    ("unfreeze", "Unfreeze-Env"),
    ("evidence", "Evidence-Env"),
)


def history_entry(commit: Commit, env: str) -> dict[str, Any]:
    """One change of `env` as data: what kind, when, who, which release, and why."""
    kind = next((k for k, trailer in HISTORY_KINDS if commit.trailer(trailer) == env), "edit")
    by = {
        "promote": commit.trailer("Promoted-By"),
        "rollback": commit.trailer("Rolled-Back-By"),
        "freeze": commit.trailer("Frozen-By"),
        "unfreeze": commit.trailer("Unfrozen-By"),
        "evidence": commit.trailer("Recorded-By"),
    }.get(kind, "")
    reason = {
        "rollback": commit.trailer("Rollback-Reason"),
        "freeze": commit.trailer("Freeze-Reason"),
        "unfreeze": commit.trailer("Unfreeze-Reason"),
    }.get(kind, "")
    return {
        "env": env,
        "kind": kind,
        "at": iso(commit.date),
        "commit": commit.sha,
        "subject": commit.subject,
        "by": by or commit.author,
        "actor_source": commit.trailer("Actor-Source") or None,
        "release": commit.trailer("Release-Id") or None,
        "from": commit.trailer("Promote-From") or None,
        "reverted_release": commit.trailer("Reverted-Release-Id") or None,
        "approved_by": commit.trailer_all("Approved-By"),
        "reason": reason or None,
        "trigger": commit.trailer("Rollback-Trigger") or None,
        "frozen": {"rollback": True, "freeze": True, "unfreeze": False}.get(kind),
        "values_changes": commit.trailer_all("Values-Change"),
        "evidence": commit.trailer("Evidence") or None,
        # Canary envs: progressing/initial (promotion), rolled_back (+ what the Rollout was doing) — rollout.yaml.
        "rollout_state": commit.trailer("Rollout-State") or None,
        "rollout_observed": commit.trailer("Rollout-Observed") or None,
    }


def env_history(repo: GitOpsRepo, env: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Every commit that changed `environments/<env>/`, newest first, as history entries."""
    if not repo.file(f"environments/{env}").is_dir():
        raise GitOpsError(f"environments/{env}/ does not exist in the GitOps repository")
    return [history_entry(c, env) for c in repo.log(f"environments/{env}", limit=limit)]
