"""Shared model of the GitOps environments: envs and their files, actors, pins, freeze state, history.

Used by `promote`, `rollback`, `unfreeze`, `status` and the rollback controller, so they
all read git the same way. Layout of one env in the GitOps repository:

    environments/<env>/release.yaml               the pins (pipeline.gitops.release.Release.to_values)
    environments/<env>/freeze.yaml                frozen: true|false (+ since, by, reason)
    environments/<env>/evidence/<release-id>.json gate results + promotion records for that release

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

from pipeline.gitops.release import OPTIONAL_PINS, Release
from pipeline.gitops.repo import REMOVE, Commit, GitOpsError, GitOpsRepo, flatten, git, load_yaml_text
from pipeline.runtime.tools import REPO_ROOT

ENVS = ("dev", "staging", "prod")
# Gates whose results a release must carry (names of the pipeline stages that produce them).
GATE_STAGES = ("test", "scan", "smoke", "loadtest")
# The env of ci's own env-specific gates (its loadtest runs loadtests/slo/dev.yaml).
CI_GATE_ENV = "dev"


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
    keys = ("id", "gateway_digest", "vllm_digest", "model_revision", "chart_version")
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
